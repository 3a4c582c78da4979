"""What both two-slab rewrites share: the pair path's slab loop of a generated bf16 tiled kernel
opened for 128-column tiles (warp w on 64-column slab w & 1, `wr` = w >> 1), and the kernel
written back under a new name."""
import re

SLAB_LOOP = "for (int cs = 0; cs < tile_w; cs += 64) {"


def open_slabs(path):
    """The source, the pair path's slab loop (start, end) and its body with the slab chosen by w & 1."""
    src = open(path).read()
    start = src.index(SLAB_LOOP)
    end = src.index("#undef PSG_SLAB", start)
    body = src[start:end].replace(
        SLAB_LOOP, "const int hs = w & 1, wr = w >> 1;\n    for (int cs = 0; cs < tile_w; cs += 128) {", 1)
    body = body.replace("const int col = cs + 2 * lane;", "const int col = cs + 64 * hs + 2 * lane;")
    body = body.replace("(tile + cs * n_bi) + lane;", "(tile + (cs + 64 * hs) * n_bi) + lane;")
    return src, start, end, body


def write(path, src, start, end, body, name, min_blocks=None):
    """The kernel with `body` for its slab loop, stores by `wr`, renamed `name`; optionally
    `__launch_bounds__(256, min_blocks)`."""
    body = body.replace("if (active && w == 0)", "if (active && wr == 0)").replace(
        "if (active1 && w == 1)", "if (active1 && wr == 1)")
    out = src[:start] + body + src[end:]
    kname = re.search(r'extern "C" __global__ void __launch_bounds__\([^)]*\) (\w+)\(', out).group(1)
    out = out.replace(kname + "(", name + "(", 1)
    if min_blocks is not None:
        out = out.replace(f"__launch_bounds__(256) {name}(", f"__launch_bounds__(256, {min_blocks}) {name}(", 1)
    open(path, "w").write(out)
