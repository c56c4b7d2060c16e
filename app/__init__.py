"""KiloNeRF viewer application: the only package that touches glfw and imgui."""
