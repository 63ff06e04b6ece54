"""tlx: transfer learning to the edge.

Importing this package never imports TensorFlow: the runtime installed on a
Raspberry Pi shares it.
"""

__version__ = "0.1.0"
