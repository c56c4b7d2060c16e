"""KiloNeRF renderer: the .kilo scene format, cameras, multi-network evaluation, ray marching, backends.

Importing this package never compiles CUDA or touches a GPU.
"""
