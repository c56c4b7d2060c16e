#version 330 core
// Overlay lines and points in world space; the projection matches the renderer's pinhole camera.
uniform mat4 mvp;
uniform float point_size;
in vec3 in_pos;
in vec4 in_color;
out vec3 v_world;
out vec4 v_color;
void main() {
    v_world = in_pos;
    v_color = in_color;
    gl_PointSize = point_size;
    gl_Position = mvp * vec4(in_pos, 1.0);
}
