/// What a model and the data it is used on must agree on, checked before the model meets the
/// data: each check raises DataError naming the model file, so the run ends with one line and
/// exit code 1 instead of an index error deep in evaluation or training.
module Backprop.Cli.Contracts

open Backprop.Core

/// The number of classes a model tells apart: the outputs of its last layer that has a size.
let outputsOf (layers: Layer list) : int = List.last (Network.sizes layers)

/// The largest label of a data set (0 for a set with no images; the readers refuse those).
let largestLabel (d: Dataset) : int = if d.Labels.Length = 0 then 0 else int (Array.max d.Labels)

/// Refuses (DataError naming `file`) a model whose outputs do not cover the labels of a data
/// set: the largest label + 1 must be at most the model's outputs. `where` names the labels'
/// source in the message (such as "the test labels of data/mnist").
let outputsCoverLabels (file: string) (layers: Layer list) (where: string) (d: Dataset) =
    let outputs = outputsOf layers
    let largest = largestLabel d
    if largest >= outputs then
        raise (DataError(file, $"the model has %d{outputs} outputs (classes 0-%d{outputs - 1}), {where} go up to label %d{largest}: the model cannot be used on this data"))

/// Refuses (DataError naming `file`) a model whose input count is not the data's pixel count.
let inputsMatchPixels (file: string) (layers: Layer list) (where: string) (pixels: int) =
    let inputs = List.head (Network.sizes layers)
    if inputs <> pixels then
        raise (DataError(file, $"the model takes %d{inputs} inputs, {where} have %d{pixels} pixels"))

/// Refuses (DataError naming `file`) a data set with no images (an evaluation of none would
/// give an accuracy of NaN).
let notEmpty (file: string) (d: Dataset) =
    if d.Count = 0 then raise (DataError(file, "no images: nothing to evaluate"))
