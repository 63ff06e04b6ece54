"""`tlx sweep`: train, export and bench every backbone x image size on one split, then find the
models no other beats on accuracy, latency and size (the Pareto front) and the one to pick
under budgets. TensorFlow is imported only by the steps that train and export."""
