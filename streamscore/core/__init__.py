"""The shared scoring core: bytes in, score records and dead letters out. Nothing here does I/O;
the stream pipeline, REST and batch runs all call it. It imports no engine, runner or destination."""
