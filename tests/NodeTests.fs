/// The computational-graph nodes of 5.4, checked with the book's shopping numbers.
module NodeTests

open Expecto
open Backprop.Core

let private close = Accuracy.veryHigh

[<Tests>]
let tests =
    testList "nodes (5.4)" [
        test "buy_apple: forward price 220, backward 2.2 / 110 / 200" {
            let r = Shopping.buyApple 100.0 2.0 1.1
            Expect.floatClose close r.Price 220.0 "price"
            let g = dict r.Gradients
            Expect.floatClose close g["apple"] 2.2 "dapple"
            Expect.floatClose close g["apple_num"] 110.0 "dapple_num"
            Expect.floatClose close g["tax"] 200.0 "dtax"
        }
        test "buy_apple_orange: forward price 715, backward 2.2, 110, 3.3, 165, 650" {
            let r = Shopping.buyAppleOrange 100.0 2.0 150.0 3.0 1.1
            Expect.floatClose close r.Price 715.0 "price"
            let expected = [ "apple", 2.2; "apple_num", 110.0; "orange", 3.3; "orange_num", 165.0; "tax", 650.0 ]
            Expect.equal (List.map fst r.Gradients) (List.map fst expected) "gradient names in the book's order"
            for (name, g), (_, e) in List.zip r.Gradients expected do
                Expect.floatClose close g e $"d{name}"
        }
        test "MulLayer backward swaps the inputs" {
            let out, cache = MulLayer.forward 3.0 5.0
            Expect.equal out 15.0 "forward"
            Expect.equal (MulLayer.backward cache 2.0) (10.0, 6.0) "dx = dout*y, dy = dout*x"
        }
        test "AddLayer passes dout to both inputs, in float32 too" {
            Expect.equal (AddLayer.forward 1.5f 2.0f) 3.5f "forward"
            Expect.equal (AddLayer.backward 1.3f) (1.3f, 1.3f) "backward"
        }
    ]
