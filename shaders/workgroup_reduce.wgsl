// Workgroup tree sum shared by reduce.wgsl, layer_norm.wgsl, cross_entropy.wgsl, ppo_kl.wgsl and ppo_loss.wgsl
// (`//!include workgroup_reduce`). The including shader declares `alias Red = T` (the element: f32, a vector or a
// matrix of f32 — anything with `+`) and `WG` (an `override` or `const` u32: threads per workgroup, a power of two),
// writes its thread's value to red[l], then calls red_sum(l) from uniform control flow; the total ends up in red[0].

var<workgroup> red: array<Red, WG>;

// Tree-sums red over the workgroup into red[0] (log2(WG) + 1 barriers, the first one before any read).
fn red_sum(l: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (l < s) {
      red[l] = red[l] + red[l + s];
    }
    workgroupBarrier();
  }
}
