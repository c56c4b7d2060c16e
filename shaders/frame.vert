#version 330 core
// Full-viewport quad: in_pos in [-1, 1]^2. Images have row 0 at the top, so v is flipped for them;
// GL textures (an offscreen frame copied to the window) have row 0 at the bottom and are not.
uniform bool flip_y;
in vec2 in_pos;
out vec2 v_uv;
void main() {
    float v = 0.5 * in_pos.y + 0.5;
    v_uv = vec2(0.5 * in_pos.x + 0.5, flip_y ? 1.0 - v : v);
    gl_Position = vec4(in_pos, 0.0, 1.0);
}
