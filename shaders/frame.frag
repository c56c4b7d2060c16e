#version 330 core
// The rendered frame, sampled nearest (render resolution = viewport) or linear (dynamic resolution).
uniform sampler2D frame;
in vec2 v_uv;
out vec4 f_color;
void main() {
    f_color = vec4(texture(frame, v_uv).rgb, 1.0);
}
