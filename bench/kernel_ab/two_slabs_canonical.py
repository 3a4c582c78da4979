"""The two-slab layout of two_slabs_any_order.py in psg's canonical sum order: warp (w >> 1, w & 1)
sums rows w>>1 + 8m and w>>1 + 4 + 8m in two loops (partials w>>1 and w>>1 + 4), and each
column's 8 partials combine as the generated kernel's do: the same bits. HALVES 1 keeps the
generated kernel's two halves of partials (twice their shared memory: 128 columns in flight);
0 keeps one half (for kernels of 2 partial slots, as the z-score mean's) and adds a barrier
after each combine. usage: IN OUT KERNEL_NAME HALVES"""
import re, sys
from slabs import open_slabs, write

halves = sys.argv[4] == "1"
src, start, end, body = open_slabs(sys.argv[1])
head = "    if (active) {\n        #pragma unroll 8\n        for (int b = w; b < n_bi; b += 8) {\n"
out = []; pos = 0
while True:
    i = body.find(head, pos)
    if i < 0: out.append(body[pos:]); break
    j = body.index("\n        }\n    }\n", i) + len("\n        }\n    }\n")
    loop = body[i:j]
    accs = sorted(set(re.findall(r"(\w+) \+= ", loop)) - {"b"})
    loop4 = loop
    for a in accs: loop4 = re.sub(r"\b%s\b" % a, a + "_4", loop4)
    loop1 = loop.replace("for (int b = w; b < n_bi; b += 8)", "for (int b = wr; b < n_bi; b += 8)")
    loop4 = loop4.replace("for (int b = w; b < n_bi; b += 8)", "for (int b = wr + 4; b < n_bi; b += 8)")
    decl = "".join(f"    psg_acc {a}_4 = 0.0f;\n" for a in accs)
    pre = body[pos:i]
    out.append(pre + decl + loop1 + loop4)
    # the partial writes that follow: part2[(S * 8 + w) * 32 + lane] = make_float2(A, B);
    k = j
    seg_end = body.index("__syncthreads();", k)
    writes = body[k:seg_end]
    def wr_(m):
        S, A, B = m.group(1), m.group(2), m.group(3)
        a4 = A + "_4" if A in accs else A; b4 = B + "_4" if B in accs else B
        return (f"part2[(({S} * 8 + wr) * 2 + hs) * 32 + lane] = make_float2({A}, {B});\n"
                f"    part2[(({S} * 8 + wr + 4) * 2 + hs) * 32 + lane] = make_float2({a4}, {b4});")
    writes2 = re.sub(r"part2\[\((\d+) \* 8 \+ w\) \* 32 \+ lane\] = make_float2\((\w+), (\w+)\);", wr_, writes)
    out.append(writes2)
    pos = seg_end
body = "".join(out)
body = re.sub(r"q\[r\] = part2\[\((\d+) \* 8 \+ r\) \* 32 \+ lane\];", lambda m: f"q[r] = part2[(({m.group(1)} * 8 + r) * 2 + hs) * 32 + lane];", body)
if not halves:
    # one half: slot indices S -> S mod slots; a barrier after each combine's reads
    body = re.sub(r"\(\((\d+) \* 8", lambda m: f"(({int(m.group(1)) % 2} * 8", body)
    body = re.sub(r"(t\d+_1 = q\[0\]\.y[^;]*;\n    \})", lambda m: m.group(1) + "\n    __syncthreads();", body)
assert "b = w;" not in body
# 3 blocks a multiprocessor: without the bound NVRTC gives the second loops 124 registers.
write(sys.argv[2], src, start, end, body, sys.argv[3], min_blocks=3)
