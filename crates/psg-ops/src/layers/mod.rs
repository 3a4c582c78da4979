//! Per-sample gradients and the batch gradient of layers, from one forward/backward pass.
