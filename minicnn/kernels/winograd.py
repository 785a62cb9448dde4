"""Winograd convolution for 3x3 kernels, stride 1 (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", 2015): F(2x2, 3x3) and F(4x4, 3x3), forward and backward, on NumPy arrays.

The output is cut into m x m tiles (m = 2 or 4); each is computed from an a x a tile of
the padded input (a = m + 2; neighbouring input tiles overlap by 2) as

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          g: a 3x3 filter, d: an a x a input tile

summed over the input channels. Summed over channels, the elementwise product ⊙ at
each of the a*a transform points is a matrix product, so with U = G g Gᵀ and
V = Bᵀ d B for every filter, channel and tile the core is a*a products
M[ξ] = U[ξ] (F x C) @ V[ξ] (C x tiles): 16 multiplications per 2x2 output tile
(36 direct) or 36 per 4x4 tile (144 direct). Backward is the adjoint of these three
linear maps, so it is products too:

    dM = A dY Aᵀ,   dU = dM Vᵀ -> grad_weight = Gᵀ dU G,   dV = Uᵀ dM -> grad_d = B dV Bᵀ

with the input tiles' gradients added back where the tiles overlap. Nothing is
recomputed: V, kept from forward (`WinogradTiles`), is to the weight's gradient what
im2col's columns are to it.

Layout: the batch axis last. The image is copied once into (C, H, W, N) order
(zero-padded), so that every tile gather and every overlap-add is a pass whose inner
loop runs along the N images, contiguous, however small the image (an MNIST map has
6 tiles a row; a gather along rows would be loops of 6 elements). A tile's index is
(th, tw, n), P = TH*TW*N of them; the transformed tiles are (a*a, C, P). Every
transform L X Lᵀ is one BLAS product kron(L, L) @ X over all the tiles of a block
(`two_sided_matrix`). A large batch is cut into blocks of images (`block_size`),
each block transformed, multiplied and laid out before the next, which bounds the
transformed tiles in memory at once.

The output and the input's gradient are written channel-major ((N, C, H, W) arrays stored as
(C, N, H, W), the layout the im2col path hands on: kernels/cpu_layout.py); measured on cnn.conv2's
shapes, the output's strided copies and the gradient's reads run 10-15% faster that way.

Sizes that do not divide into tiles: the output is computed on TH*m x TW*m
(TH = ceil(OH / m)) from an input padded with zeros to TH*m + 2 rows, and cropped;
the cropped outputs' gradients are zeros.

Error, relative to the largest value of the reference im2col result (x, w and the output's
gradient of unit scale; measured by tests/test_winograd.py's draws and over 120 random shapes of 1
to 64 channels, the worst of out, grad_x, grad_weight and grad_bias): float32 F(2x2, 3x3) 7e-7, about
im2col's own rounding (its transforms have coefficients 0, 1/2 and 1); F(4x4, 3x3) 5e-6, whose G has
1/6, 1/12 and 1/24 and whose A and B reach 8 and 5; float64 1e-14 for both. The tests bound them at
5e-6, 5e-5 and 1e-10.

NumPy only: CuPy arrays stay on im2col (convolution.py, with the CuPy window kernels),
where cuDNN's Winograd would be the thing to match: convolution.algorithm answers
"im2col" for them. Which layers run Winograd at all is convolution.algorithm's rule.
"""

import numpy

from .cpu_layout import empty_channel_major

# (Bᵀ, G, Aᵀ) for F(m x m, 3 x 3), m = 2 and 4 (Lavin and Gray 2015, sections 4.1 and 4.2).
TRANSFORMS = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}

_matrices = {}


def matrices(tile, dtype):
    """(Bᵀ, G, Aᵀ) of F(tile x tile, 3 x 3) as arrays of `dtype`: (a, a), (a, 3), (tile, a), a = tile + 2."""
    key = tile, numpy.dtype(dtype)
    if key not in _matrices:
        _matrices[key] = tuple(numpy.array(matrix, dtype=dtype) for matrix in TRANSFORMS[tile])
    return _matrices[key]


_two_sided = {}


def two_sided_matrix(tile, dtype, name):
    """kron(L, L) for L = Bᵀ, G, Aᵀ (name "BT", "G", "AT") or their transposes ("B", "GT", "A").

    kron(L, L) @ X.reshape(k*k, -1) is L X Lᵀ for every k x k block X: one product with k*k terms a
    sum. It measured faster than the separable form (two products with k terms) for every shape
    here: one pass over the blocks instead of two, and a product BLAS runs well (benchmarks/NOTES.md).
    """
    key = tile, numpy.dtype(dtype), name
    if key not in _two_sided:
        BT, G, AT = matrices(tile, dtype)
        left = {"BT": BT, "B": BT.T, "G": G, "GT": G.T, "AT": AT, "A": AT.T}[name]
        _two_sided[key] = numpy.kron(left, left)
    return _two_sided[key]


class WinogradTiles:
    """What forward keeps for backward: the tile size m, the transformed weight U: (a*a, F, C) and the
    transformed input V, one (a*a, C, P) array per block of images (P = TH*TW*images in the block)."""

    __slots__ = ("tile", "block", "transformed_input", "transformed_weight")

    def __init__(self, tile, block, transformed_input, transformed_weight):
        self.tile, self.block = tile, block
        self.transformed_input, self.transformed_weight = transformed_input, transformed_weight


def tile_counts(out_size, tile):
    """(TH, TW): the tiles that cover an (OH, OW) output, ceil(OH / tile) by ceil(OW / tile)."""
    return -(-out_size[0] // tile), -(-out_size[1] // tile)


# A block of images holds at most about this many bytes of transformed tiles (a*a * max(C, F) * P). Blocks that
# fit a core's L2 (2 MiB) measured no faster in CPU time and, with OpenBLAS on 2 threads, slower: 3x as many
# small products, each a barrier of BLAS's threads (benchmarks/NOTES.md). 16 MiB: cnn.conv2 in one block to 200.
BLOCK_BYTES = 1 << 24


def block_size(shape, filters, tile, out_size, itemsize):
    """Images per block: (a*a * max(C, F) * TH*TW) * itemsize bytes each, BLOCK_BYTES a block, at least 1."""
    TH, TW = tile_counts(out_size, tile)
    per_image = (tile + 2) ** 2 * max(shape[1], filters) * TH * TW * itemsize
    return max(1, min(shape[0], BLOCK_BYTES // per_image))


def transform_weight(weight, tile):
    """weight: (F, C, 3, 3) -> U = G w Gᵀ: (a*a, F, C)."""
    F, C = weight.shape[:2]
    a = tile + 2
    taps = numpy.ascontiguousarray(weight.transpose(2, 3, 0, 1)).reshape(9, F * C)
    return (two_sided_matrix(tile, weight.dtype, "G") @ taps).reshape(a * a, F, C)


def transform_input(x, padding, tile, out_size):
    """x: (N, C, H, W) -> V = Bᵀ d B: (a*a, C, P), P = TH*TW*N tiles in (th, tw, n) order.

    The image is zero-padded into batch-last order (C, TH*m + 2, TW*m + 2, N), then the tiles are
    gathered with one copy through a strided view, (a, a, C, TH, TW, N), whose inner loop runs along N.
    """
    N, C, H, W = x.shape
    TH, TW = tile_counts(out_size, tile)
    PH, PW = padding
    a = tile + 2
    padded = numpy.empty((C, TH * tile + 2, TW * tile + 2, N), dtype=x.dtype)
    padded[:, :PH] = 0  # only the border is zeroed: the image is written over the rest
    padded[:, PH + H:] = 0
    padded[:, PH:PH + H, :PW] = 0
    padded[:, PH:PH + H, PW + W:] = 0
    padded[:, PH:PH + H, PW:PW + W] = x.transpose(1, 2, 3, 0)
    sC, sH, sW, sN = padded.strides
    view = numpy.lib.stride_tricks.as_strided(padded, (a, a, C, TH, TW, N), (sH, sW, sC, tile * sH, tile * sW, sN),
                                              writeable=False)
    tiles = numpy.empty(view.shape, dtype=x.dtype)
    numpy.copyto(tiles, view)
    return (two_sided_matrix(tile, x.dtype, "BT") @ tiles.reshape(a * a, -1)).reshape(a * a, C, -1)


def write_output(out, products, bias, tile):
    """products: M, (a*a, F, P) -> out: (N, F, OH, OW) = Aᵀ M A laid out and cropped, plus the bias."""
    N, F, OH, OW = out.shape
    TH, TW = tile_counts((OH, OW), tile)
    Y = (two_sided_matrix(tile, out.dtype, "AT") @ products.reshape(products.shape[0], -1))
    Y = Y.reshape(tile, tile, F, TH, TW, N)
    for r in range(tile):
        for c in range(tile):
            rows, cols = len(range(r, OH, tile)), len(range(c, OW, tile))
            out[:, :, r::tile, c::tile] = Y[r, c, :, :rows, :cols].transpose(3, 0, 1, 2)  # (N, F, rows, cols)
    if bias is not None:  # a pass of its own: added in the strided copies above, it made them 2x slower
        out += bias[:, None, None]


def forward(x, weight, bias, padding, out_size, tile):
    """x: (N, C, H, W), weight: (F, C, 3, 3), bias: (F,) or None -> (out: (N, F, OH, OW), WinogradTiles).

    Block by block of images (`block_size`): transform the input, the a*a products, the output.
    """
    N, F = x.shape[0], weight.shape[0]
    U = transform_weight(weight, tile)  # (a*a, F, C)
    block = block_size(x.shape, F, tile, out_size, x.itemsize)
    out = empty_channel_major((N, F, *out_size), x.dtype, numpy)  # as im2col's output
    kept = []
    for start in range(0, N, block):
        V = transform_input(x[start:start + block], padding, tile, out_size)  # (a*a, C, P)
        write_output(out[start:start + block], numpy.matmul(U, V), bias, tile)  # U V: (a*a, F, P)
        kept.append(V)
    return out, WinogradTiles(tile, block, kept, U)


def backward(grad, weight, kept, x_shape, padding, wanted, tile):
    """grad: (N, F, OH, OW) -> (grad_x, grad_weight, grad_bias), None where `wanted` says so.

    weight: (F, C, 3, 3); kept: forward's WinogradTiles (None when the weight's gradient is not wanted).
    """
    wants_x, wants_weight, wants_bias = wanted
    N, F, OH, OW = grad.shape
    C = x_shape[1]
    a = tile + 2
    block = kept.block if kept is not None else block_size(x_shape, F, tile, (OH, OW), grad.itemsize)
    U = kept.transformed_weight if kept is not None else transform_weight(weight, tile)
    grad_x = empty_channel_major(x_shape, grad.dtype, numpy) if wants_x else None
    grad_U = numpy.zeros((a * a, F, C), dtype=grad.dtype) if wants_weight else None
    for index, start in enumerate(range(0, N, block)):
        dM = grad_products(grad[start:start + block], tile)  # A dY Aᵀ: (a*a, F, P)
        if wants_weight:
            grad_U += numpy.matmul(dM, kept.transformed_input[index].transpose(0, 2, 1))  # dM Vᵀ: (a*a, F, C)
        if wants_x:
            dV = numpy.matmul(U.transpose(0, 2, 1), dM)  # Uᵀ dM: (a*a, C, P)
            add_input_tiles(grad_x[start:start + block], dV, padding, tile)
    grad_weight = None
    if wants_weight:  # Gᵀ dU G, back to (F, C, 3, 3)
        taps = two_sided_matrix(tile, grad.dtype, "GT") @ grad_U.reshape(a * a, -1)
        grad_weight = numpy.ascontiguousarray(taps.reshape(3, 3, F, C).transpose(2, 3, 0, 1))
    grad_bias = None
    if wants_bias:  # a channel-major gradient (the layers after a convolution keep its layout) sums its rows
        rows = grad.transpose(1, 0, 2, 3)
        grad_bias = rows.reshape(F, -1).sum(axis=1) if rows.flags.c_contiguous else grad.sum(axis=(0, 2, 3))
    return grad_x, grad_weight, grad_bias


def grad_products(grad, tile):
    """grad: (N, F, OH, OW) -> dM = A dY Aᵀ: (a*a, F, P), dY the output's tiles (zeros past its edge)."""
    N, F, OH, OW = grad.shape
    TH, TW = tile_counts((OH, OW), tile)
    ragged = OH % tile or OW % tile
    grad_tiles = (numpy.zeros if ragged else numpy.empty)((tile, tile, F, TH, TW, N), dtype=grad.dtype)
    for r in range(tile):
        for c in range(tile):
            rows, cols = len(range(r, OH, tile)), len(range(c, OW, tile))
            grad_tiles[r, c, :, :rows, :cols] = grad[:, :, r::tile, c::tile].transpose(1, 2, 3, 0)
    dM = two_sided_matrix(tile, grad.dtype, "A") @ grad_tiles.reshape(tile * tile, -1)
    return dM.reshape((tile + 2) ** 2, F, -1)


def add_input_tiles(grad_x, grad_transformed, padding, tile):
    """grad_transformed: dV, (a*a, C, P) -> grad_x: (N, C, H, W), written: B dV Bᵀ summed where tiles overlap.

    The adjoint of `transform_input`: one `+=` per tile offset (k, l), each over every tile once
    (tiles m apart never share a pixel at the same offset), so `+=` is exact; its inner loop runs along N.
    """
    N, C, H, W = grad_x.shape
    a = tile + 2
    grad_tiles = two_sided_matrix(tile, grad_x.dtype, "B") @ grad_transformed.reshape(a * a, -1)
    TH, TW = tile_counts((H + 2 * padding[0] - 2, W + 2 * padding[1] - 2), tile)
    grad_tiles = grad_tiles.reshape(a, a, C, TH, TW, N)
    PH, PW = padding
    image = numpy.zeros((C, TH * tile + 2, TW * tile + 2, N), dtype=grad_x.dtype)
    for k in range(a):
        for l in range(a):
            image[:, k:k + tile * TH:tile, l:l + tile * TW:tile] += grad_tiles[k, l]
    grad_x[...] = image[:, PH:PH + H, PW:PW + W].transpose(3, 0, 1, 2)
