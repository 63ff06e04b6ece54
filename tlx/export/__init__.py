"""`tlx export`: a trained run -> .tflite files (float32, float16, dynamic, int8) that take
raw 0..255 RGB pixels, carry their labels and preprocessing in TFLite Metadata, and
pass a parity check against the Keras model.

Importing this package never imports TensorFlow; the modules that need it import it
inside their functions.
"""
