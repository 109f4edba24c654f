/// `backprop serve`: one page on 127.0.0.1 where a person draws a digit and watches the network
/// (the 28 × 28 it sees, the probabilities, the hidden activations, the input gradient as a heat
/// map) or browses the test set. An ASP.NET Core minimal API over the core's Trace and Preprocess
/// functions; the page (wwwroot/) is embedded in the program.
module Backprop.Cli.Serve

open System
open System.IO
open System.Net
open System.Text.Json
open System.Threading.Tasks
open Argu
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open Backprop.Core

/// Options of `serve`.
type ServeArgs =
    | [<Mandatory>] Model of file: string
    | Port of port: int
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model to show (.npz written by train --save)."
            | Port _ -> "the port on 127.0.0.1 (default: 5000; 0 picks a free one)."
            | Data _ -> "directory with the MNIST-layout IDX files, for the test-set browser (default: the shipped data/mnist)."

/// The largest canvas /api/predict takes, per side.
let maxSide = 1024

/// The largest request body /api/predict reads: a maxSide × maxSide canvas written as JSON
/// numbers ("255," for each pixel) with room to spare.
let maxBodyBytes = 6L * 1024L * 1024L

/// What the page shows for one image: the 28 × 28 the network sees (0-255), the probabilities,
/// the predicted class, the hidden layers' activations, and the input gradient of the loss for
/// gradientClass (dL/dx, one per pixel: negative where more ink would make the class likelier).
type Inspection =
    { /// The network's input as grey levels 0-255, row by row.
      input28: int[]
      /// The class probabilities.
      probabilities: float[]
      /// The most probable class.
      predicted: int
      /// The outputs of the layers between the Affine ones (Relu1, ...), by name.
      activations: {| name: string; values: float[] |}[]
      /// The class the gradient is for (the predicted one unless another was asked for).
      gradientClass: int
      /// dL/dx for gradientClass, one per input pixel.
      gradient: float[] }

/// The panels for an image given as the network's input (values 0-255), the gradient for the
/// class asked for or else the predicted one.
let inspect (model: Model<float>) (input28: byte[]) (cls: int option) : Inspection =
    let x = input28 |> Array.map (fun v -> float v / 255.0)
    let p = Trace.probabilities model x
    let predicted = p |> Array.indexed |> Array.maxBy snd |> fst
    let c = defaultArg cls predicted
    let hidden =
        Trace.activations model x
        |> List.take (model.Layers.Length - 1) // not the scores
        |> List.filter (fun (name, _) -> not (name.StartsWith "Affine")) // the activations, not the sums before them
    { input28 = Array.map int input28
      probabilities = p
      predicted = predicted
      activations = [| for name, values in hidden -> {| name = name; values = values |} |]
      gradientClass = c
      gradient = Trace.inputGradient model x c }

/// A request the API refuses: the one-line message sent with status 400.
exception private Refused of string

let private refuse (message: string) : 'a = raise (Refused message)

/// Reads an optional class (0 .. classes-1) from a JSON property or a query string value.
let private classOf (classes: int) (value: string option) =
    match value with
    | None
    | Some ""
    | Some "null" -> None
    | Some s ->
        match Int32.TryParse s with
        | true, c when c >= 0 && c < classes -> Some c
        | _ -> refuse $"class must be between 0 and %d{classes - 1}, got {s}"

/// The grey levels of a POST /api/predict body, checked before anything is allocated for them:
/// { pixels: 784 values } (the network's input as it is) or { width, height, pixels: width ×
/// height values } (a canvas, preprocessed as MNIST's digits were). Returns the 28 × 28 input.
let private inputOf (side: int) (body: JsonElement) : byte[] =
    if body.ValueKind <> JsonValueKind.Object then refuse "the body must be a JSON object {pixels, width, height}"
    let intProperty (name: string) =
        match body.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.Number ->
            match v.TryGetInt32() with
            | true, n -> Some n
            | _ -> refuse $"{name} must be an integer"
        | true, v when v.ValueKind = JsonValueKind.Null -> None
        | true, _ -> refuse $"{name} must be an integer"
        | _ -> None
    let pixels =
        match body.TryGetProperty "pixels" with
        | true, v when v.ValueKind = JsonValueKind.Array -> v
        | _ -> refuse "pixels must be an array of grey levels 0-255"
    let width, height, preprocess =
        match intProperty "width", intProperty "height" with
        | Some w, Some h ->
            if w < 1 || h < 1 || w > maxSide || h > maxSide then refuse $"width and height must be between 1 and %d{maxSide}, got %d{w}x%d{h}"
            w, h, true
        | None, None -> side, side, false
        | _ -> refuse "give both width and height, or neither (pixels is then the network's input)"
    let count = pixels.GetArrayLength()
    if count <> width * height then
        refuse (if preprocess then $"pixels must have width x height = %d{width * height} values, got %d{count}" else $"pixels must have %d{side * side} values (or give width and height), got %d{count}")
    let grey = Array.zeroCreate<byte> count
    let mutable k = 0
    for v in pixels.EnumerateArray() do
        let g = if v.ValueKind = JsonValueKind.Number then (match v.TryGetDouble() with | true, g -> g | _ -> nan) else nan
        if g >= 0.0 && g <= 255.0 then grey[k] <- byte (Math.Round g)
        else refuse $"pixels must be numbers from 0 to 255; value %d{k} is {v.GetRawText()}"
        k <- k + 1
    if preprocess then Preprocess.mnist (width, height, grey) else grey

/// The page's files, embedded in the program: (content type, bytes) by path.
let private pageFiles =
    lazy
        (let assembly = typeof<ServeArgs>.Assembly
         [ "/", "index.html", "text/html; charset=utf-8"
           "/app.js", "app.js", "text/javascript; charset=utf-8"
           "/style.css", "style.css", "text/css; charset=utf-8" ]
         |> List.map (fun (path, name, contentType) ->
             use stream = assembly.GetManifestResourceStream($"wwwroot/{name}")
             if isNull stream then failwith $"wwwroot/{name} is not embedded in the program"
             use memory = new MemoryStream()
             stream.CopyTo memory
             path, (contentType, memory.ToArray()))
         |> Map.ofList)

let private jsonOptions = JsonSerializerOptions(JsonSerializerDefaults.Web)

/// Writes a value as JSON with the status code.
let private send (ctx: HttpContext) (status: int) (value: obj) : Task =
    ctx.Response.StatusCode <- status
    ctx.Response.WriteAsJsonAsync(value, jsonOptions)

/// Runs a handler, turning a refused request into 400 {error} (one line), and any other failure
/// into 500 {error}.
let private handle (f: HttpContext -> Task<obj>) : RequestDelegate =
    RequestDelegate(fun ctx ->
        task {
            try
                let! value = f ctx
                do! send ctx 200 value
            with
            | Refused message -> do! send ctx 400 {| error = message |}
            | :? BadHttpRequestException as e -> do! send ctx 400 {| error = e.Message |}
            | e when not ctx.Response.HasStarted -> do! send ctx 500 {| error = $"{e.GetType().Name}: {e.Message.Split('\n')[0]}" |}
        })

/// The application: the page and its JSON API for a model and a test set, Kestrel on 127.0.0.1
/// at the port (0 for any free one; app.Urls tells which after StartAsync).
///
/// - GET /, /app.js, /style.css: the page.
/// - GET /api/info: {layers, classes, testCount}.
/// - POST /api/predict {pixels, width?, height?, class?}: an Inspection of the drawing.
/// - GET /api/test/{index}?class=c: an Inspection of test image index, with its index and label.
/// - GET /api/misclassified: the test images the model gets wrong, {count, total, items: [{index, label, predicted}]}.
///
/// Sizes from outside are checked before anything is allocated for them (canvas at most
/// maxSide × maxSide, body at most maxBodyBytes, index in range); a bad request gets 400 and
/// {error: "one line"}.
let buildApp (model: Model<float>) (test: Dataset) (port: int) : WebApplication =
    let sizes = Network.sizes model.Layers
    let side = int (sqrt (float sizes.Head))
    if side * side <> sizes.Head then invalidArg "model" $"the model takes %d{sizes.Head} inputs, not a square image"
    if test.PixelCount <> sizes.Head then invalidArg "test" $"the model takes %d{sizes.Head} inputs, the test images have %d{test.PixelCount} pixels"
    let classes = List.last sizes
    let builder = WebApplication.CreateSlimBuilder()
    builder.Logging.SetMinimumLevel(LogLevel.Warning) |> ignore
    // a failure to start (the port taken) reaches the caller as an exception: no stack trace logged too
    builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None) |> ignore
    builder.WebHost.UseKestrel(fun options ->
        options.Listen(IPAddress.Loopback, port)
        options.Limits.MaxRequestBodySize <- Nullable maxBodyBytes)
    |> ignore
    let app = builder.Build()
    let misclassified =
        lazy
            (let predicted = Evaluate.predictions model test
             [| for i in 0 .. test.Count - 1 do
                    if predicted[i] <> int test.Labels[i] then yield {| index = i; label = int test.Labels[i]; predicted = predicted[i] |} |])
    for KeyValue(path, (contentType, bytes)) in pageFiles.Force() do
        app.MapGet(path, RequestDelegate(fun ctx ->
            ctx.Response.ContentType <- contentType
            ctx.Response.Body.WriteAsync(bytes, 0, bytes.Length)))
        |> ignore
    app.MapGet("/api/info", handle (fun _ ->
        Task.FromResult(box {| layers = Trace.layerNames model.Layers; sizes = sizes; classes = classes; testCount = test.Count |})))
    |> ignore
    app.MapPost("/api/predict", handle (fun ctx ->
        task {
            if ctx.Request.ContentLength.HasValue && ctx.Request.ContentLength.Value > maxBodyBytes then
                refuse $"the body is %d{ctx.Request.ContentLength.Value} bytes, more than the %d{maxBodyBytes} a %d{maxSide}x%d{maxSide} canvas needs"
            let! doc =
                task {
                    try return! JsonDocument.ParseAsync(ctx.Request.Body, JsonDocumentOptions(MaxDepth = 4))
                    with :? JsonException as e -> return refuse $"the body is not JSON: {e.Message.Split('\n')[0]}"
                }
            use doc = doc
            let input = inputOf side doc.RootElement
            let cls =
                match doc.RootElement.TryGetProperty "class" with
                | true, v -> classOf classes (Some(v.GetRawText()))
                | _ -> None
            return box (inspect model input cls)
        }))
    |> ignore
    app.MapGet("/api/test/{index}", handle (fun ctx ->
        let text = string ctx.Request.RouteValues["index"]
        let index =
            match Int32.TryParse text with
            | true, i when i >= 0 && i < test.Count -> i
            | _ -> refuse $"index must be between 0 and %d{test.Count - 1}, got {text}"
        let cls = classOf classes (if ctx.Request.Query.ContainsKey "class" then Some(string ctx.Request.Query["class"]) else None)
        let input = Array.sub test.Pixels (index * test.PixelCount) test.PixelCount
        let r = inspect model input cls
        Task.FromResult(box {| r with index = index; label = int test.Labels[index] |})))
    |> ignore
    app.MapGet("/api/misclassified", handle (fun _ ->
        let items = misclassified.Force()
        Task.FromResult(box {| count = items.Length; total = test.Count; items = items |})))
    |> ignore
    app

/// `serve`: the page for a model on 127.0.0.1 until Ctrl-C.
let run (args: ParseResults<ServeArgs>) : int =
    let file = args.GetResult Model
    let port = args.GetResult(Port, defaultValue = 5000)
    if port < 0 || port > 65535 then args.Raise($"--port must be between 0 and 65535, got %d{port}", showUsage = false)
    if not (File.Exists file) then raise (DataError(file, "model file not found"))
    let model =
        match Npz.load file with
        | SavedModel.Single m -> Network.convert float m
        | SavedModel.Double m -> m
    let dir =
        match args.TryGetResult Data with
        | Some d -> d
        | None ->
            Mnist.tryFindShipped [ Environment.CurrentDirectory; AppContext.BaseDirectory ]
            |> Option.defaultWith (fun () -> args.Raise("no MNIST data found: data/mnist is missing here and above the program; give one with --data DIR", showUsage = false))
    if not (Directory.Exists dir) then raise (DataError(dir, "data directory not found"))
    let test = Mnist.loadPair (Mnist.resolve dir Mnist.testImagesFile) (Mnist.resolve dir Mnist.testLabelsFile)
    let inputs = (Network.sizes model.Layers).Head
    if inputs <> test.PixelCount then raise (DataError(file, $"the model takes %d{inputs} inputs, the test images have %d{test.PixelCount} pixels"))
    let side = int (sqrt (float inputs))
    if side * side <> inputs then raise (DataError(file, $"the model takes %d{inputs} inputs, not a square image"))
    let app = buildApp model test port
    app.StartAsync().GetAwaiter().GetResult()
    printfn $"""serve: {String.Join(", ", app.Urls)} ({Path.GetFileName file}, {test.Count} test images from {Path.GetFullPath dir}); Ctrl-C to stop"""
    app.WaitForShutdownAsync().GetAwaiter().GetResult()
    0
