// The shopping example of 5.4, node by node: forward gives the price, backward the gradient of
// the price with respect to every input.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/shopping.fsx
#r "../artifacts/bin/Core/release/Backprop.Core.dll"

open Backprop.Core

// Forward: apple price × count, then × tax.
let apple, appleNum, tax = 100.0, 2.0, 1.1
let applePrice, mulApple = MulLayer.forward apple appleNum
let price, mulTax = MulLayer.forward applePrice tax
printfn $"price: %g{price}"

// Backward: start from dprice = 1 and go through the nodes in reverse.
let dApplePrice, dTax = MulLayer.backward mulTax 1.0
let dApple, dAppleNum = MulLayer.backward mulApple dApplePrice
printfn $"dApple: %g{dApple}, dAppleNum: %g{dAppleNum}, dTax: %g{dTax}"

// With oranges: an add node joins the two purchases before the tax.
let r = Shopping.buyAppleOrange 100.0 2.0 150.0 3.0 1.1
printfn $"apples and oranges: price %g{r.Price}"
for name, g in r.Gradients do
    printfn $"  d{name}: %g{g}"
