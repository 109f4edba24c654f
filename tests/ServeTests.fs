/// `backprop serve`: the JSON API against a real Kestrel on a free loopback port (Serve.buildApp),
/// and the page in headless Chromium (PuppeteerSharp, the system's /usr/bin/chromium): a stroke
/// drawn with the mouse, a test image opened from the browser panel.
module ServeTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Text
open System.Text.Json
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// Runs f with the page served for the shared model and the MNIST test set on a free port of
/// 127.0.0.1 (its base URL), then stops the server.
let private withServer (f: string -> unit) =
    let _, test = mnist.Force()
    let app = Backprop.Cli.Serve.buildApp (TraceTests.bookModel.Force()) test 0
    app.StartAsync().GetAwaiter().GetResult()
    try
        let url = Seq.exactlyOne app.Urls
        f url
    finally
        app.StopAsync().GetAwaiter().GetResult()
        (app :> IAsyncDisposable).DisposeAsync().AsTask().GetAwaiter().GetResult()

/// (status, parsed JSON body) of a request.
let private request (client: HttpClient) (message: HttpRequestMessage) =
    use response = client.Send message
    let body = response.Content.ReadAsStringAsync().GetAwaiter().GetResult()
    response.StatusCode, (try JsonDocument.Parse(body).RootElement.Clone() with _ -> failtest $"not JSON: {body}")

let private get (client: HttpClient) (path: string) = request client (new HttpRequestMessage(HttpMethod.Get, path))

let private post (client: HttpClient) (json: string) =
    request client (new HttpRequestMessage(HttpMethod.Post, "/api/predict", Content = new StringContent(json, Encoding.UTF8, "application/json")))

let private floats (e: JsonElement) = [| for v in e.EnumerateArray() -> v.GetDouble() |]

let private ints (e: JsonElement) = [| for v in e.EnumerateArray() -> v.GetInt32() |]

/// Expects a 400 whose error is one line containing the text.
let private refused (status: HttpStatusCode, body: JsonElement) (text: string) =
    Expect.equal status HttpStatusCode.BadRequest $"400 for {text}"
    let error = body.GetProperty("error").GetString()
    Expect.stringContains error text "the message"
    Expect.isFalse (error.Contains '\n') "one line"

[<Tests>]
let tests =
    testList "serve" [
        test "GET /api/test/0: the first test image, a 7, with every panel's data" {
            withServer (fun url ->
                Expect.stringStarts url "http://127.0.0.1:" "Kestrel on the loopback address only"
                use client = new HttpClient(BaseAddress = Uri url)
                let status, r = get client "/api/test/0"
                Expect.equal status HttpStatusCode.OK "status"
                Expect.equal (r.GetProperty("label").GetInt32()) 7 "MNIST's first test label"
                Expect.equal (r.GetProperty("predicted").GetInt32()) 7 "predicted"
                let _, test = mnist.Force()
                Expect.equal (ints (r.GetProperty "input28")) (Array.map int test.Pixels[..783]) "the 28 x 28 bytes of the image, unchanged"
                let p = floats (r.GetProperty "probabilities")
                Expect.floatClose Accuracy.high (Array.sum p) 1.0 "probabilities sum to 1"
                Expect.equal (p |> Array.indexed |> Array.maxBy snd |> fst) 7 "the largest is the predicted class"
                let acts = r.GetProperty("activations").EnumerateArray() |> Seq.toList
                Expect.equal [ for a in acts -> a.GetProperty("name").GetString(), (floats (a.GetProperty "values")).Length ] [ "Relu1", 50 ] "the hidden layer"
                Expect.isTrue (acts.Head.GetProperty "values" |> floats |> Array.forall (fun v -> v >= 0.0)) "ReLU outputs are never negative"
                Expect.equal (r.GetProperty("gradientClass").GetInt32()) 7 "the gradient is for the predicted class"
                // the gradient against a central difference of the loss along its largest pixel
                let g = floats (r.GetProperty "gradient")
                Expect.equal g.Length 784 "one per pixel"
                let k = g |> Array.indexed |> Array.maxBy (snd >> abs) |> fst
                let loss (d: float) =
                    let x = Matrix<float>.Build.Dense(1, 784, fun _ j -> float test.Pixels[j] / 255.0 + (if j = k then d else 0.0))
                    Network.lossWithoutDelta (TraceTests.bookModel.Force()) x (Labels.ClassIndices [| 7 |])
                Expect.floatClose { absolute = 1e-9; relative = 1e-5 } g[k] ((loss 1e-4 - loss -1e-4) / 2e-4) "dL/dx at the steepest pixel"
                let status, r3 = get client "/api/test/0?class=3"
                Expect.equal (status, r3.GetProperty("gradientClass").GetInt32()) (HttpStatusCode.OK, 3) "another class asked for"
                Expect.notEqual (floats (r3.GetProperty "gradient")) g "another gradient")
        }
        test "POST /api/predict: a canvas is preprocessed (a shipped 56 x 56 digit reads right), 784 values are taken as they are" {
            withServer (fun url ->
                use client = new HttpClient(BaseAddress = Uri url)
                let w, h, grey = Backprop.Cli.Images.readPng (Path.Combine(repoRoot, "data", "samples", "digit-2-test1.png"))
                let status, r = post client (JsonSerializer.Serialize {| width = w; height = h; pixels = grey |> Array.map int |})
                Expect.equal status HttpStatusCode.OK "status"
                Expect.equal (r.GetProperty("predicted").GetInt32()) 2 "the 2"
                let input = ints (r.GetProperty "input28")
                Expect.equal input.Length 784 "the network's 28 x 28"
                Expect.equal (Array.max input) 255 "white ink at full strength"
                Expect.equal input[0] 0 "on black"
                let _, test = mnist.Force()
                let raw = test.Pixels[784 * 2 .. 784 * 3 - 1] |> Array.map int // test image 2, a 1
                let status, r = post client (JsonSerializer.Serialize {| pixels = raw; ``class`` = 4 |})
                Expect.equal status HttpStatusCode.OK "status"
                Expect.equal (ints (r.GetProperty "input28")) raw "not preprocessed"
                Expect.equal (r.GetProperty("predicted").GetInt32(), r.GetProperty("gradientClass").GetInt32()) (1, 4) "a 1, the gradient for 4")
        }
        test "bad requests: 400 and a one-line message, sizes checked before anything is allocated" {
            withServer (fun url ->
                use client = new HttpClient(BaseAddress = Uri url)
                refused (post client """{"width": 1025, "height": 10, "pixels": []}""") "width and height must be between 1 and 1024, got 1025x10"
                refused (post client """{"width": 0, "height": 10, "pixels": []}""") "width and height must be between 1 and 1024, got 0x10"
                refused (post client """{"width": 2, "height": 2, "pixels": [1, 2, 3]}""") "pixels must have width x height = 4 values, got 3"
                refused (post client """{"pixels": [1, 2, 3]}""") "pixels must have 784 values (or give width and height), got 3"
                refused (post client """{"width": 2, "pixels": [1, 2]}""") "give both width and height, or neither"
                refused (post client """{"width": 1, "height": 2, "pixels": [1, 256]}""") "pixels must be numbers from 0 to 255; value 1 is 256"
                refused (post client """{"width": 1, "height": 2, "pixels": [1, "a"]}""") "value 1 is \"a\""
                refused (post client """{"width": 1, "height": 1, "pixels": [1], "class": 10}""") "class must be between 0 and 9, got 10"
                refused (post client """{"width": 1.5, "height": 1, "pixels": [1]}""") "width must be an integer"
                refused (post client "[1, 2]") "the body must be a JSON object"
                refused (post client "not json") "the body is not JSON"
                // a body larger than any canvas: refused from its Content-Length, before it is read (the
                // client announces it and waits for the server's go-ahead, which never comes)
                let large = new HttpRequestMessage(HttpMethod.Post, "/api/predict", Content = new ByteArrayContent(Array.create (7 * 1024 * 1024) (byte ' ')))
                large.Headers.ExpectContinue <- Nullable true
                refused (request client large) "the body is 7340032 bytes, more than the 6291456"
                for index in [ "-1"; "10000"; "abc"; "99999999999" ] do
                    refused (get client $"/api/test/{index}") $"index must be between 0 and 9999, got {index}"
                refused (get client "/api/test/0?class=x") "class must be between 0 and 9, got x")
        }
        test "GET /api/misclassified: the test images the model gets wrong, 543 for its test accuracy 0.9457" {
            withServer (fun url ->
                use client = new HttpClient(BaseAddress = Uri url)
                let status, r = get client "/api/misclassified"
                Expect.equal status HttpStatusCode.OK "status"
                Expect.equal (r.GetProperty("total").GetInt32()) 10000 "the test set"
                Expect.equal (r.GetProperty("count").GetInt32()) 543 "(1 - 0.9457) x 10000, as training reported"
                let items = [ for i in r.GetProperty("items").EnumerateArray() -> i.GetProperty("index").GetInt32(), i.GetProperty("label").GetInt32(), i.GetProperty("predicted").GetInt32() ]
                Expect.equal items.Length 543 "every one listed"
                let _, test = mnist.Force()
                for index, label, predicted in items do
                    Expect.equal label (int test.Labels[index]) "the label"
                    Expect.notEqual predicted label "wrong"
                Expect.equal (List.map (fun (i, _, _) -> i) items) (List.sort (List.map (fun (i, _, _) -> i) items)) "in index order"
                let _, first = get client $"/api/test/{(fun (i, _, _) -> i) items.Head}"
                Expect.equal (first.GetProperty("predicted").GetInt32()) ((fun (_, _, p) -> p) items.Head) "the same prediction when opened")
        }
        test "GET /, /app.js, /style.css: the page, embedded in the program" {
            withServer (fun url ->
                use client = new HttpClient(BaseAddress = Uri url)
                for path, contentType, part in [ "/", "text/html", "<canvas id=\"draw\""; "/app.js", "text/javascript", "/api/predict"; "/style.css", "text/css", "canvas.pixels" ] do
                    use response = client.GetAsync(path).GetAwaiter().GetResult()
                    Expect.equal response.StatusCode HttpStatusCode.OK path
                    Expect.equal response.Content.Headers.ContentType.MediaType contentType $"{path} content type"
                    Expect.stringContains (response.Content.ReadAsStringAsync().GetAwaiter().GetResult()) part path
                    Expect.isFalse (response.Content.ReadAsStringAsync().GetAwaiter().GetResult().Contains "http") $"{path}: nothing fetched from elsewhere (offline)")
        }
        testSequencedGroup Common.console <| test "serve: a bad port, a missing model, a port taken: one line each" {
            let model = TraceTests.bookModelFile
            let code, _, err = CliTests.run [ "serve"; "--model"; model; "--port"; "70000" ]
            Expect.equal code 2 "usage"
            Expect.stringContains err "--port must be between 0 and 65535, got 70000" "port"
            let code, _, err = CliTests.run [ "serve"; "--model"; "/no/such.npz" ]
            Expect.equal (code, err.Trim()) (1, "backprop: /no/such.npz: model file not found") "missing model"
            withServer (fun url ->
                let port = Uri(url).Port
                let code, _, err = CliTests.run [ "serve"; "--model"; model; "--port"; string port; "--data"; mnistDir ]
                Expect.equal (code, err.Trim()) (1, $"backprop: Failed to bind to address http://127.0.0.1:%d{port}: address already in use.") "port taken")
        }
        testSequencedGroup "browser" <| testList "page in headless Chromium" [
            let withPage (f: PuppeteerSharp.IPage -> unit) =
                let chromium = GraphTests.requireProgram "/usr/bin/chromium" "chromium"
                withServer (fun url ->
                    let options = PuppeteerSharp.LaunchOptions(Headless = true, ExecutablePath = chromium, Args = [| "--no-sandbox"; "--disable-gpu" |])
                    use browser = PuppeteerSharp.Puppeteer.LaunchAsync(options).GetAwaiter().GetResult()
                    use page = browser.NewPageAsync().GetAwaiter().GetResult()
                    page.GoToAsync(url).GetAwaiter().GetResult() |> ignore
                    page.WaitForSelectorAsync("#misclassified button").GetAwaiter().GetResult() |> ignore // the page has loaded its data
                    f page)
            let read (page: PuppeteerSharp.IPage) (js: string) = page.EvaluateExpressionAsync<string>(js).GetAwaiter().GetResult()
            // heat-map pixels that are coloured (red or blue above the grey digit)
            let coloured =
                "String((() => { const d = document.getElementById('heatmap').getContext('2d').getImageData(0, 0, 28, 28).data; let n = 0; for (let k = 0; k < d.length; k += 4) if (Math.abs(d[k] - d[k + 2]) > 40) n++; return n; })())"
            test "a stroke drawn with the mouse is read as a 1, with a heat map" {
                withPage (fun page ->
                    let box = page.QuerySelectorAsync("#draw").GetAwaiter().GetResult().BoundingBoxAsync().GetAwaiter().GetResult()
                    let x = box.X + box.Width / 2m
                    page.Mouse.MoveAsync(x, box.Y + 40m).GetAwaiter().GetResult()
                    page.Mouse.DownAsync().GetAwaiter().GetResult()
                    page.Mouse.MoveAsync(x + 4m, box.Y + box.Height - 40m, PuppeteerSharp.Input.MoveOptions(Steps = 20)).GetAwaiter().GetResult()
                    page.Mouse.UpAsync().GetAwaiter().GetResult()
                    page.WaitForFunctionAsync("() => document.getElementById('source').textContent === 'your drawing'").GetAwaiter().GetResult() |> ignore
                    Expect.equal (read page "document.getElementById('predicted').textContent") "1" "predicted"
                    Expect.equal (read page "document.getElementById('heatmap').dataset.drawn") "true" "heat map drawn"
                    Expect.equal (read page "document.getElementById('heatmap').dataset.class") "1" "for the predicted class"
                    Expect.isGreaterThan (int (read page coloured)) 50 "coloured pixels on the heat map"
                    Expect.equal (read page "String(document.querySelectorAll('#bars .bar').length)") "10" "ten probability bars"
                    Expect.equal (read page "String(document.querySelectorAll('#activations .cell').length)") "50" "the 50 hidden activations")
            }
            test "test image 0 opened from the browser panel reads 7" {
                withPage (fun page ->
                    page.EvaluateExpressionAsync("document.getElementById('index').value = '0'").GetAwaiter().GetResult() |> ignore
                    page.ClickAsync("#show").GetAwaiter().GetResult()
                    page.WaitForFunctionAsync("() => document.getElementById('source').textContent.startsWith('test image 0')").GetAwaiter().GetResult() |> ignore
                    Expect.equal (read page "document.getElementById('source').textContent") "test image 0 (label 7)" "the panel names the image"
                    Expect.equal (read page "document.getElementById('predicted').textContent") "7" "predicted"
                    Expect.isGreaterThan (int (read page coloured)) 50 "coloured pixels on the heat map"
                    // another class for the gradient: the heat map follows
                    page.SelectAsync("#class", "3").GetAwaiter().GetResult() |> ignore
                    page.WaitForFunctionAsync("() => document.getElementById('heatmap').dataset.class === '3'").GetAwaiter().GetResult() |> ignore
                    Expect.equal (read page "document.getElementById('gradient-class').textContent") "3" "the class named")
            }
        ]
    ]
