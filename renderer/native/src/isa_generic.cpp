// The native CPU kernels compiled for portable C++ (any CPU; libm for sin, cos, exp).
// Selected at run time by kilocpu.cpp when the CPU has the instructions (kc_table_generic).
#include "kilocpu.h"


#define KC_ISA_GENERIC 1
#include "render_impl.h"

extern "C" const kc::KernelTable kc_table_generic = {
    Simd::kIsa, rays_for_pixels, clip_to_box, write_pixels, render_frame, evaluate_points, march_pass, composite_pass,
    unpack_one_network,
};


