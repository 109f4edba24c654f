/// Reading grey-scale images for `predict`: PGM files (P2 text or P5 binary) and PNGs of any
/// size, scaled to the model's input and shown as text.
module Backprop.Cli.Images

open System
open System.IO
open System.Text
open Backprop.Core

/// Reads a PGM file: (width, height, pixels scaled to 0-255, row by row). Raises DataError
/// naming the file when it is not a PGM it can read.
let readPgm (path: string) : int * int * byte[] =
    if not (File.Exists path) then raise (DataError(path, "image file not found"))
    let bytes = File.ReadAllBytes path
    let fail problem = raise (DataError(path, problem))
    // Header tokens: magic, width, height, maxval, separated by white space and # comments.
    let mutable pos = 0
    let token () =
        let rec skip () =
            while pos < bytes.Length && Char.IsWhiteSpace(char bytes[pos]) do pos <- pos + 1
            if pos < bytes.Length && bytes[pos] = byte '#' then
                while pos < bytes.Length && bytes[pos] <> byte '\n' do pos <- pos + 1
                skip ()
        skip ()
        let start = pos
        while pos < bytes.Length && not (Char.IsWhiteSpace(char bytes[pos])) do pos <- pos + 1
        Encoding.ASCII.GetString(bytes, start, pos - start)
    let magic = token ()
    if magic <> "P5" && magic <> "P2" then fail "not a grey-scale PGM image (P2 or P5); other formats are not read (convert to PGM first)"
    let number name =
        match Int32.TryParse(token ()) with
        | true, v when v > 0 -> v
        | _ -> fail $"bad {name} in the PGM header"
    let width, height, maxval = number "width", number "height", number "maximum value"
    if maxval > 255 then fail "16-bit PGM images are not supported"
    let scale (v: int) = byte (v * 255 / maxval)
    let pixels =
        if magic = "P5" then
            let start = pos + 1
            if bytes.Length < start + width * height then fail $"truncated: %d{width}x%d{height} pixels announced"
            Array.init (width * height) (fun i -> scale (int bytes[start + i]))
        else
            Array.init (width * height) (fun _ ->
                match Int32.TryParse(token ()) with
                | true, v -> scale v
                | _ -> fail "truncated or bad pixel values")
    width, height, pixels

/// Reads a PNG (or any format SkiaSharp decodes) as grey levels: (width, height, pixels 0-255).
let readPng (path: string) : int * int * byte[] =
    if not (File.Exists path) then raise (DataError(path, "image file not found"))
    use bitmap = SkiaSharp.SKBitmap.Decode path
    if isNull bitmap then raise (DataError(path, "not an image SkiaSharp can decode (PNG, JPEG, ...)"))
    let grey (c: SkiaSharp.SKColor) =
        // luminance, with transparent pixels taken as the white page they would be drawn on
        let a = float c.Alpha / 255.0
        let y = 0.299 * float c.Red + 0.587 * float c.Green + 0.114 * float c.Blue
        byte (a * y + (1.0 - a) * 255.0)
    bitmap.Width, bitmap.Height, Array.init (bitmap.Width * bitmap.Height) (fun k -> grey (bitmap.GetPixel(k % bitmap.Width, k / bitmap.Width)))

/// Reads a grey-scale image: PGM by its magic (P2/P5), anything else through SkiaSharp (PNG).
let readImage (path: string) : int * int * byte[] =
    if not (File.Exists path) then raise (DataError(path, "image file not found"))
    use f = File.OpenRead path
    let head = Array.zeroCreate<byte> 2
    let n = f.Read(head, 0, 2)
    if n = 2 && head[0] = byte 'P' && (head[1] = byte '2' || head[1] = byte '5') then readPgm path else readPng path

/// The image scaled to size × size by averaging the source pixels each target pixel covers,
/// inverted when its border is bright (MNIST digits are white on black).
let toInput (size: int) (width: int, height: int, pixels: byte[]) : float[] =
    let at x y = float pixels[y * width + x]
    let border =
        [ for x in 0 .. width - 1 do yield at x 0; yield at x (height - 1)
          for y in 0 .. height - 1 do yield at 0 y; yield at (width - 1) y ]
        |> List.average
    let invert = border > 127.0
    Array.init (size * size) (fun k ->
        let ty, tx = k / size, k % size
        let x0, x1 = tx * width / size, max (tx * width / size + 1) ((tx + 1) * width / size)
        let y0, y1 = ty * height / size, max (ty * height / size + 1) ((ty + 1) * height / size)
        let mean = Seq.average (seq { for y in y0 .. min (height - 1) (y1 - 1) do for x in x0 .. min (width - 1) (x1 - 1) -> at x y })
        (if invert then 255.0 - mean else mean) / 255.0)

/// The image as text, one character per pixel, darker characters for brighter pixels.
let render (size: int) (input: float[]) : string list =
    let shades = " .:-=+*#%@"
    [ for y in 0 .. size - 1 ->
        String(Array.init size (fun x -> shades[min 9 (int (input[y * size + x] * 9.99))])) ]
