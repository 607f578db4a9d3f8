"""SAM / ASAM / Fisher-SAM training and the Hessian-sharpness metric."""
