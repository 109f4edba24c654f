/// The matrix products the layers need, in one small module. Every product in the core goes
/// through here, so a faster backend (BLAS, vectorized kernels) can slot in under the layers
/// without touching them. The functions are generic in the element type (float or float32).
[<RequireQualifiedAccess>]
module Backprop.Linalg

open MathNet.Numerics.LinearAlgebra

/// A · B
let mul (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = a.Multiply b

/// Aᵀ · B (used for the weight gradient xᵀ · dout).
let mulTN (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = a.TransposeThisAndMultiply b

/// A · Bᵀ (used for the input gradient dout · Wᵀ).
let mulNT (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = a.TransposeAndMultiply b
