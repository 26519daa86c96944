// Deterministic scatter-add, step 1: build (target, source) pairs and sort them with a bitonic
// network. Keys are destination row numbers (0xFFFFFFFF = dropped: padding or an out-of-range
// index); values are source row numbers. Pairs are unique (values are distinct), so the sorted
// order is fully determined, and each run of equal keys lists its sources in ascending order.
// `total` (a power of two ≥ 512) is the padded pair count.
struct Params {
  m: u32,      // real pairs (sources)
  a: u32,      // keys_rows: K | keys_gather: ndim | sort steps: k (bitonic block size)
  b: u32,      // keys_rows: V | keys_gather: axis | sort steps: j (compare distance)
  c: u32,      // keys_gather: L (x's size along the axis)
  total: u32,  // padded pair count
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
  shape: array<vec4<u32>, 2>,  // keys_gather: index shape
  stride: array<vec4<u32>, 2>, // keys_gather: x strides
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> vals: array<u32>;
@group(0) @binding(3) var<storage, read> index: array<i32>;

const DROP: u32 = 0xffffffffu;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

// index_select / embedding: source row e = o * K + k goes to row o * V + index[k].
@compute @workgroup_size(256)
fn keys_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= p.total) { return; }
  var key = DROP;
  if (e < p.m) {
    let o = e / p.a;
    let v = index[e - o * p.a];
    if (v >= 0 && u32(v) < p.b) { key = o * p.b + u32(v); }
  }
  keys[e] = key;
  vals[e] = e;
}

// gather: source element e (coordinates c in the index shape) goes to x's element at c with
// c[axis] replaced by index[e].
@compute @workgroup_size(256)
fn keys_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= p.total) { return; }
  var key = DROP;
  if (e < p.m) {
    let v = index[e];
    if (v >= 0 && u32(v) < p.c) {
      var rem = e;
      var off = 0u;
      for (var d = i32(p.a) - 1; d >= 0; d--) {
        let s = at(p.shape, u32(d));
        if (u32(d) != p.b) { off += (rem % s) * at(p.stride, u32(d)); }
        rem = rem / s;
      }
      key = off + u32(v) * at(p.stride, p.b);
    }
  }
  keys[e] = key;
  vals[e] = e;
}

// ---------------------------------------------------------------- bitonic sort of (key, val)

fn before(ka: u32, va: u32, kb: u32, vb: u32) -> bool {
  return ka < kb || (ka == kb && va < vb);
}

// One compare-exchange step over the whole array (distance j ≥ 512), one invocation per pair.
@compute @workgroup_size(256)
fn global_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  if (t >= p.total / 2u) { return; }
  let j = p.b;
  let i = ((t & ~(j - 1u)) << 1u) | (t & (j - 1u));
  let l = i + j;
  let asc = (i & p.a) == 0u;
  let ka = keys[i];
  let va = vals[i];
  let kb = keys[l];
  let vb = vals[l];
  if (before(kb, vb, ka, va) == asc) {
    keys[i] = kb;
    vals[i] = vb;
    keys[l] = ka;
    vals[l] = va;
  }
}

const BLOCK: u32 = 512u;
var<workgroup> sk: array<u32, 512>;
var<workgroup> sv: array<u32, 512>;

fn local_exchange(base: u32, lid: u32, k: u32, j: u32) {
  let i = ((lid & ~(j - 1u)) << 1u) | (lid & (j - 1u));
  let l = i + j;
  let asc = ((base + i) & k) == 0u;
  let ka = sk[i];
  let va = sv[i];
  let kb = sk[l];
  let vb = sv[l];
  if (before(kb, vb, ka, va) == asc) {
    sk[i] = kb;
    sv[i] = vb;
    sk[l] = ka;
    sv[l] = va;
  }
}

// Sorts each 512-element block in workgroup memory (all stages with block size ≤ 512), or with
// p.a = k > 512, runs the steps j = 256 … 1 of stage k. Workgroup w owns elements [512w, 512w + 512).
fn local_pass(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, full: bool) {
  let w = wid.x + wid.y * nwg.x;
  if (w >= p.total / BLOCK) { return; }
  let base = w * BLOCK;
  sk[lid] = keys[base + lid];
  sv[lid] = vals[base + lid];
  sk[lid + 256u] = keys[base + lid + 256u];
  sv[lid + 256u] = vals[base + lid + 256u];
  workgroupBarrier();
  if (full) {
    for (var k = 2u; k <= BLOCK; k = k << 1u) {
      for (var j = k >> 1u; j > 0u; j = j >> 1u) {
        local_exchange(base, lid, k, j);
        workgroupBarrier();
      }
    }
  } else {
    for (var j = BLOCK >> 1u; j > 0u; j = j >> 1u) {
      local_exchange(base, lid, p.a, j);
      workgroupBarrier();
    }
  }
  keys[base + lid] = sk[lid];
  vals[base + lid] = sv[lid];
  keys[base + lid + 256u] = sk[lid + 256u];
  vals[base + lid + 256u] = sv[lid + 256u];
}

@compute @workgroup_size(256)
fn local_sort(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  local_pass(wid, nwg, lid, true);
}

@compute @workgroup_size(256)
fn local_merge(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  local_pass(wid, nwg, lid, false);
}
