"""REST serving: the Open Inference Protocol and ``/v1/score`` over the shared scoring core."""
