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
transform is two small products (`two_sided`): the rows, then the columns, each one
BLAS call over the whole batch.

Sizes that do not divide into tiles: the output is computed on TH*m x TW*m
(TH = ceil(OH / m)) from an input padded with zeros to TH*m + 2 rows, and cropped;
the cropped outputs' gradients are zeros.

Error (float32, x and w of unit scale, measured by tests/test_winograd.py): the
transforms have small integer coefficients for F(2x2, 3x3), whose results are
within about 1e-5 of the output's scale (max |y|) of the reference im2col conv;
F(4x4, 3x3)'s G has 1/6, 1/12 and 1/24 and its A and B up to 8 and 5, and its
results are within about 1e-4 (we test 3e-5 and 3e-4: about 3x what was measured).
The gradients likewise. In float64 both agree with the reference to 1e-10 relative.

NumPy only: CuPy arrays stay on im2col (convolution.py, with the CuPy window kernels),
where cuDNN's Winograd would be the thing to match; `choose` answers None for them.
"""

import numpy

from .threads import matmul

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


class WinogradTiles:
    """What forward keeps for backward: tile, transformed_input V: (a*a, C, P), transformed_weight U: (a*a, F, C)."""

    __slots__ = ("tile", "transformed_input", "transformed_weight")

    def __init__(self, tile, transformed_input, transformed_weight):
        self.tile, self.transformed_input, self.transformed_weight = tile, transformed_input, transformed_weight


def tile_counts(out_size, tile):
    """(TH, TW): the tiles that cover an (OH, OW) output, ceil(OH / tile) by ceil(OW / tile)."""
    return -(-out_size[0] // tile), -(-out_size[1] // tile)


def two_sided(left, blocks):
    """left: (r, k), blocks: (k, k, ...) -> (r, r, ...): left @ block @ leftᵀ for each block along the trailing axes.

    Two BLAS products: the rows (one (r, k) @ (k, k*rest) product), then the columns (k batched ones).
    """
    k = blocks.shape[0]
    rows = matmul(left, blocks.reshape(k, -1)).reshape(left.shape[0], k, -1)  # (r, k, rest)
    return numpy.matmul(left, rows).reshape((left.shape[0],) * 2 + blocks.shape[2:])  # (r, r, rest)


def transform_weight(weight, tile):
    """weight: (F, C, 3, 3) -> U = G w Gᵀ: (a*a, F, C)."""
    _, G, _ = matrices(tile, weight.dtype)
    F, C = weight.shape[:2]
    a = tile + 2
    return two_sided(G, numpy.ascontiguousarray(weight.transpose(2, 3, 0, 1))).reshape(a * a, F, C)


def batch_last_padded(x, padding, tile, out_size):
    """x: (N, C, H, W) -> (C, TH*tile + 2, TW*tile + 2, N): zero-padded by `padding` (and to whole tiles), batch last."""
    N, C, H, W = x.shape
    TH, TW = tile_counts(out_size, tile)
    PH, PW = padding
    padded = numpy.empty((C, TH * tile + 2, TW * tile + 2, N), dtype=x.dtype)
    padded[:, :PH] = 0  # only the border is zeroed: the image is written over the rest
    padded[:, PH + H:] = 0
    padded[:, PH:PH + H, :PW] = 0
    padded[:, PH:PH + H, PW + W:] = 0
    padded[:, PH:PH + H, PW:PW + W] = x.transpose(1, 2, 3, 0)
    return padded


def input_tiles(padded, tile, tiles):
    """padded: (C, Hp, Wp, N) -> (a, a, C, TH, TW, N): tile (th, tw) of image n is padded[:, th*m:th*m+a, tw*m:tw*m+a, n].

    One copy through a strided view; its inner loop runs along N.
    """
    C, _, _, N = padded.shape
    a = tile + 2
    sC, sH, sW, sN = padded.strides
    view = numpy.lib.stride_tricks.as_strided(padded, (a, a, C, *tiles, N), (sH, sW, sC, tile * sH, tile * sW, sN),
                                              writeable=False)
    gathered = numpy.empty(view.shape, dtype=padded.dtype)
    numpy.copyto(gathered, view)
    return gathered


def forward(x, weight, bias, padding, out_size, tile):
    """x: (N, C, H, W), weight: (F, C, 3, 3), bias: (F,) or None -> (out: (N, F, OH, OW), WinogradTiles)."""
    N, C = x.shape[:2]
    F = weight.shape[0]
    a = tile + 2
    BT, _, AT = matrices(tile, x.dtype)
    tiles = tile_counts(out_size, tile)
    gathered = input_tiles(batch_last_padded(x, padding, tile, out_size), tile, tiles)  # (a, a, C, TH, TW, N)
    V = two_sided(BT, gathered).reshape(a * a, C, -1)  # Bᵀ d B: (a*a, C, P)
    U = transform_weight(weight, tile)  # (a*a, F, C)
    M = numpy.matmul(U, V)  # (a*a, F, P): the a*a products
    Y = two_sided(AT, M.reshape(a, a, -1)).reshape(tile, tile, F, *tiles, N)  # Aᵀ M A
    out = numpy.empty((N, F, *out_size), dtype=x.dtype)
    for r in range(tile):
        for c in range(tile):
            rows, cols = len(range(r, out_size[0], tile)), len(range(c, out_size[1], tile))
            source = Y[r, c, :, :rows, :cols].transpose(3, 0, 1, 2)  # (N, F, rows, cols)
            if bias is None:
                out[:, :, r::tile, c::tile] = source
            else:
                numpy.add(source, bias[:, None, None], out=out[:, :, r::tile, c::tile])
    return out, WinogradTiles(tile, V, U)


def backward(grad, weight, kept, x_shape, padding, wanted, tile):
    """grad: (N, F, OH, OW) -> (grad_x, grad_weight, grad_bias), None where `wanted` says so.

    weight: (F, C, 3, 3); kept: forward's WinogradTiles (None when the weight's gradient is not wanted).
    """
    wants_x, wants_weight, wants_bias = wanted
    N, F, OH, OW = grad.shape
    C = x_shape[1]
    a = tile + 2
    BT, G, AT = matrices(tile, grad.dtype)
    tiles = tile_counts((OH, OW), tile)
    grad_tiles = output_tiles(grad, tile, tiles)  # (m, m, F, TH, TW, N)
    dM = two_sided(AT.T, grad_tiles).reshape(a * a, F, -1)  # A dY Aᵀ: (a*a, F, P)
    grad_x = grad_weight = grad_bias = None
    if wants_bias:
        grad_bias = grad.sum(axis=(0, 2, 3))
    if wants_weight:
        dU = numpy.matmul(dM, kept.transformed_input.transpose(0, 2, 1))  # (a*a, F, C)
        grad_weight = two_sided(G.T, dU.reshape(a, a, -1)).reshape(3, 3, F, C).transpose(2, 3, 0, 1)
        grad_weight = numpy.ascontiguousarray(grad_weight)
    if wants_x:
        U = kept.transformed_weight if kept is not None else transform_weight(weight, tile)
        dV = numpy.matmul(U.transpose(0, 2, 1), dM)  # (a*a, C, P)
        grad_d = two_sided(BT.T, dV.reshape(a, a, -1)).reshape(a, a, C, *tiles, N)  # B dV Bᵀ
        grad_x = add_input_tiles(grad_d, x_shape, padding, tile)
    return grad_x, grad_weight, grad_bias


def output_tiles(grad, tile, tiles):
    """grad: (N, F, OH, OW) -> (m, m, F, TH, TW, N), zeros where the tiles run past the output."""
    N, F, OH, OW = grad.shape
    ragged = OH % tile or OW % tile
    grad_tiles = (numpy.zeros if ragged else numpy.empty)((tile, tile, F, *tiles, N), dtype=grad.dtype)
    for r in range(tile):
        for c in range(tile):
            rows, cols = len(range(r, OH, tile)), len(range(c, OW, tile))
            grad_tiles[r, c, :, :rows, :cols] = grad[:, :, r::tile, c::tile].transpose(1, 2, 3, 0)
    return grad_tiles


def add_input_tiles(grad_d, x_shape, padding, tile):
    """grad_d: (a, a, C, TH, TW, N), the input tiles' gradients -> (N, C, H, W), summed where tiles overlap.

    The adjoint of `input_tiles` and `batch_last_padded`: one `+=` per tile offset (k, l), each over
    every tile once (tiles m apart never share a pixel at the same offset), so `+=` is exact; its inner
    loop runs along N.
    """
    a, _, C, TH, TW, N = grad_d.shape
    _, _, H, W = x_shape
    PH, PW = padding
    image = numpy.zeros((C, TH * tile + 2, TW * tile + 2, N), dtype=grad_d.dtype)
    for k in range(a):
        for l in range(a):
            image[:, k:k + tile * TH:tile, l:l + tile * TW:tile] += grad_d[k, l]
    return numpy.ascontiguousarray(image[:, PH:PH + H, PW:PW + W].transpose(3, 0, 1, 2))
