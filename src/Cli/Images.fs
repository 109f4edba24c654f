/// Reading grey-scale images for `predict`: PGM files (P2 text or P5 binary) and PNGs (or other
/// formats SkiaSharp decodes) up to 4096x4096, scaled to the model's input and shown as text.
module Backprop.Cli.Images

open System
open System.IO
open System.Text
open Backprop.Core

/// The most pixels along either side of an image that is read.
let maxSide = 4096

/// The largest image file that is read, in bytes (a text PGM of 4096x4096 takes about 67 MB).
let maxFileBytes = 128L * 1024L * 1024L

/// The bytes of an image file: refused (DataError naming it) when it is missing, not a regular
/// file (a folder, a FIFO, a device) or larger than maxFileBytes; nothing is read before that.
let private readFile (path: string) : byte[] =
    let fail problem = raise (DataError(path, problem))
    match FileKind.ofTarget path with
    | FileKind.Regular -> ()
    | FileKind.Missing -> fail "image file not found"
    | kind -> fail $"is {FileKind.describe kind}, not a regular file"
    let length = FileInfo(path).Length
    if length > maxFileBytes then fail $"%d{length} bytes, larger than the %d{maxFileBytes} bytes of the largest image read"
    try File.ReadAllBytes path
    with
    | :? UnauthorizedAccessException -> fail "permission denied"
    | :? IOException as e -> fail $"cannot be read: {e.Message.TrimEnd('.')}"

/// Refuses (DataError naming path) an image with no pixels or more than maxSide along a side,
/// from the size its header declares, before anything is decoded.
let private checkSize (path: string) (format: string) (width: int64) (height: int64) =
    if width <= 0L || height <= 0L then raise (DataError(path, $"the {format} header declares %d{width}x%d{height} pixels: an image needs at least one"))
    if width > int64 maxSide || height > int64 maxSide then
        raise (DataError(path, $"the {format} header declares %d{width}x%d{height} pixels, more than the %d{maxSide}x%d{maxSide} this program reads"))

/// Reads a PGM image from its bytes: (width, height, pixels scaled to 0-255, row by row).
let private decodePgm (path: string) (bytes: byte[]) : int * int * byte[] =
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
        while pos < bytes.Length && pos - start < 20 && not (Char.IsWhiteSpace(char bytes[pos])) do pos <- pos + 1
        Encoding.ASCII.GetString(bytes, start, pos - start)
    let magic = token ()
    if magic <> "P5" && magic <> "P2" then fail "not a grey-scale PGM image (P2 or P5); other formats are not read (convert to PGM first)"
    let number name =
        match Int64.TryParse(token ()) with
        | true, v when v >= 0L -> v
        | _ -> fail $"bad {name} in the PGM header (truncated, or not a number)"
    let width = number "width"
    let height = number "height"
    checkSize path "PGM" width height
    let maxval = number "maximum value"
    if maxval = 0L then fail "the PGM header declares a maximum value of 0"
    if maxval > 255L then fail $"16-bit PGM images (maximum value %d{maxval}) are not read; convert to 8 bits"
    let width, height, maxval = int width, int height, int maxval
    let scale (v: int) =
        if v > maxval then fail $"pixel value %d{v} above the maximum value %d{maxval} of the header"
        byte (v * 255 / maxval)
    let pixels =
        if magic = "P5" then
            let start = pos + 1
            if int64 bytes.Length < int64 start + int64 width * int64 height then
                fail $"truncated: %d{width}x%d{height} pixels declared, %d{max 0 (bytes.Length - start)} bytes of pixel data"
            Array.init (width * height) (fun i -> scale (int bytes[start + i]))
        else
            Array.init (width * height) (fun i ->
                match Int32.TryParse(token ()) with
                | true, v when v >= 0 -> scale v
                | _ -> fail $"truncated or bad pixel value at pixel %d{i} of %d{width * height}")
    width, height, pixels

/// Reads a PGM file: (width, height, pixels scaled to 0-255, row by row). Raises DataError
/// naming the file when it is not a PGM it can read, declares more than maxSide pixels along a
/// side, or holds fewer pixels than it declares.
let readPgm (path: string) : int * int * byte[] = decodePgm path (readFile path)

/// The eight bytes every PNG file starts with.
let private pngSignature = [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]

/// Decodes a PNG (or another format SkiaSharp reads: JPEG, GIF, BMP, WebP) from its bytes as
/// grey levels: (width, height, pixels 0-255). The size is checked from the header first (a
/// PNG's IHDR read here, the others' through SkiaSharp's header parsing), then the pixels are
/// decoded; an image cut short or damaged is a DataError, never a partial picture.
let private decodeWithSkia (path: string) (bytes: byte[]) : int * int * byte[] =
    let fail problem = raise (DataError(path, problem))
    let isPng = bytes.Length >= 8 && bytes[.. 7] = pngSignature
    if isPng then
        // IHDR: length (4), "IHDR", width (4), height (4), bit depth, colour type, ...
        if bytes.Length < 8 + 8 + 13 || Encoding.ASCII.GetString(bytes, 12, 4) <> "IHDR" then fail "truncated or damaged PNG: no IHDR header"
        let be offset = (int64 bytes[offset] <<< 24) ||| (int64 bytes[offset + 1] <<< 16) ||| (int64 bytes[offset + 2] <<< 8) ||| int64 bytes[offset + 3]
        checkSize path "PNG" (be 16) (be 20)
    use data = SkiaSharp.SKData.CreateCopy bytes
    use codec = SkiaSharp.SKCodec.Create data
    if isNull codec then
        let named = if Path.GetExtension(path).ToLowerInvariant() = ".png" && not isPng then ": it is named .png but has no PNG signature" else ""
        if isPng then fail "damaged PNG: SkiaSharp cannot read its header"
        else fail $"not an image SkiaSharp can decode (PNG, JPEG, GIF, BMP, WebP) nor a PGM{named}"
    let width, height = codec.Info.Width, codec.Info.Height
    let format = codec.EncodedFormat.ToString().ToUpperInvariant()
    checkSize path format (int64 width) (int64 height)
    let info = SkiaSharp.SKImageInfo(width, height, SkiaSharp.SKColorType.Rgba8888, SkiaSharp.SKAlphaType.Unpremul)
    let rgba = Array.zeroCreate<byte> (width * height * 4)
    match codec.GetPixels(info, rgba) with
    | SkiaSharp.SKCodecResult.Success -> ()
    | SkiaSharp.SKCodecResult.IncompleteInput -> fail $"truncated {format} image: %d{width}x%d{height} pixels declared, the data ends early"
    | result -> fail $"damaged {format} image: it cannot be decoded ({result})"
    // luminance, with transparent pixels taken as the white page they would be drawn on
    let grey k =
        let a = float rgba[4 * k + 3] / 255.0
        let y = 0.299 * float rgba[4 * k] + 0.587 * float rgba[4 * k + 1] + 0.114 * float rgba[4 * k + 2]
        byte (a * y + (1.0 - a) * 255.0)
    width, height, Array.init (width * height) grey

/// Reads a PNG (or any format SkiaSharp decodes) as grey levels: (width, height, pixels 0-255).
/// Raises DataError naming the file when it is not such an image, is cut short or damaged, or
/// declares no pixels or more than maxSide along a side.
let readPng (path: string) : int * int * byte[] = decodeWithSkia path (readFile path)

/// Reads a grey-scale image: PGM by its magic (P2/P5), anything else through SkiaSharp (PNG).
/// Every failure is a DataError naming the file.
let readImage (path: string) : int * int * byte[] =
    let bytes = readFile path
    if bytes.Length = 0 then raise (DataError(path, "empty file"))
    if bytes.Length >= 2 && bytes[0] = byte 'P' && (bytes[1] = byte '2' || bytes[1] = byte '5') then decodePgm path bytes
    else decodeWithSkia path bytes

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
