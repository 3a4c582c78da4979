"""A generated bf16 tiled kernel's two-columns-a-thread path rewritten for tiles of 128 columns:
warp w takes 64-column slab w & 1 and rows w >> 1, + 4, + 8, ...; each column's partials are
4 sums (rows mod 4), combined through shared memory. Not psg's canonical sum order (8 partials,
rows mod 8), so sums differ in their last bits. usage: IN OUT KERNEL_NAME"""
import re, sys
from slabs import open_slabs, write

src, start, end, body = open_slabs(sys.argv[1])
body = body.replace("for (int b = w; b < n_bi; b += 8)", "for (int b = wr; b < n_bi; b += 4)")
body = re.sub(r"float2 q\[8\];\n(\s*)#pragma unroll\n\s*for \(int r = 0; r < 8; \+\+r\) q\[r\] = part2\[\((\d) \* 8 \+ r\) \* 32 \+ lane\];\n(\s*)(\w+) = q\[0\]\.x \+ q\[1\]\.x[^;]*;\n\s*(\w+) = q\[0\]\.y[^;]*;",
  lambda m: f"float2 q[4];\n{m.group(1)}#pragma unroll\n{m.group(1)}for (int r = 0; r < 4; ++r) q[r] = part2[({m.group(2)} * 8 + 2 * r + hs) * 32 + lane];\n{m.group(3)}{m.group(4)} = q[0].x + q[1].x + q[2].x + q[3].x;\n{m.group(3)}{m.group(5)} = q[0].y + q[1].y + q[2].y + q[3].y;", body)
assert "q[4].x" not in body, "combine not rewritten"
write(sys.argv[2], src, start, end, body, sys.argv[3])
