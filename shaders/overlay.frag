#version 330 core
// Depth-consistent overlays: fragments farther from the eye than the rendered surface (depth texture =
// expected distance t along the unit ray, 0 where nothing was hit) are drawn faint instead of on top.
uniform sampler2D scene_depth;
uniform bool use_depth;
uniform vec3 eye;
uniform vec4 viewport;       // x, y, width, height in window pixels
uniform float hidden_alpha;  // opacity factor for occluded fragments
in vec3 v_world;
in vec4 v_color;
out vec4 f_color;
void main() {
    vec4 c = v_color;
    if (use_depth) {
        vec2 uv = (gl_FragCoord.xy - viewport.xy) / viewport.zw;
        float t = texture(scene_depth, vec2(uv.x, 1.0 - uv.y)).r;
        float dist = length(v_world - eye);
        if (t > 0.0 && dist > t * 1.01 + 0.005) {
            c.a *= hidden_alpha;
        }
    }
    f_color = c;
}
