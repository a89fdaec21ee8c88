"""The image side: the GoogLeNet backbone and its weights, ONNX export and int8 quantisation, encoding
images through ONNX Runtime (resumable, sharded under torchrun) and the torchrun integration itself.
"""
