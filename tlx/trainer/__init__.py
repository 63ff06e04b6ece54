"""Training: folders -> splits -> tf.data, backbones, the classifier, the two phases, plots.

Modules here import TensorFlow inside functions, so listing backbones or reading a
run's files stays cheap.
"""
