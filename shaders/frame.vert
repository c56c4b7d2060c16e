#version 330 core
// Full-viewport quad: in_pos in [-1, 1]^2. The image's row 0 is its top row, so v is flipped.
in vec2 in_pos;
out vec2 v_uv;
void main() {
    v_uv = vec2(0.5 * in_pos.x + 0.5, 0.5 - 0.5 * in_pos.y);
    gl_Position = vec4(in_pos, 0.0, 1.0);
}
