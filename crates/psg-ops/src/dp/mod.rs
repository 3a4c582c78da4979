//! Differentially private aggregation: Gaussian noise on the GPU and CPU, and the DP-SGD step.
