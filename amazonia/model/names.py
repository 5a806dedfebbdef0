"""The model's input and output names: shared by training, export, serving and clients.

Plain strings, no TensorFlow, so a client can import them cheaply.
"""

INPUT_NAME = "input_image"
OUTPUT_WEATHER = "weather"
OUTPUT_GROUND = "ground"
