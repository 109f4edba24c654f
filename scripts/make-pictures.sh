#!/usr/bin/env bash
# Makes the pictures of the README's "See backprop" section with the program itself, into
# docs/pictures: the shopping graph and a network trace (the DOT text `backprop graph` writes, and
# the PNG Graphviz draws from it), a screenshot of `backprop serve`'s page (headless Chromium),
# and the lens of `train --inspect` on the book's five-sigmoid-layer net (std 0.01 and Xavier).
#
#   scripts/make-pictures.sh          regenerate everything (needs Debian's graphviz and chromium)
#   scripts/make-pictures.sh --check  regenerate the DOT text only and fail if it differs from the
#                                     committed .dot files (PNG bytes depend on the Graphviz build,
#                                     so the text is what is compared), or if a PNG is missing (the
#                                     page's and the lens's pixels depend on the browser and on
#                                     float32 training's last bits: only their presence is checked)
#
# The network is tests/fixtures/book-3000.npz (the book's network after 3000 iterations of its
# recipe) on MNIST test image 0.
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1-}" = "--check" ] && check=true

dotnet build src/Cli/Cli.fsproj -c Release -v quiet -nologo >/dev/null
cli=artifacts/bin/Cli/release/Backprop.Cli
model=tests/fixtures/book-3000.npz
pictures=docs/pictures
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$cli" graph apple-orange --out "$work/apple-orange.dot" >/dev/null
"$cli" graph network --model "$model" --index 0 --out "$work/network.dot" >/dev/null

if $check; then
  status=0
  for name in apple-orange network; do
    if ! diff -u "$pictures/$name.dot" "$work/$name.dot"; then
      echo "$pictures/$name.dot is not what the program draws now: run scripts/make-pictures.sh and commit"
      status=1
    fi
  done
  for name in apple-orange network page lens-std0.01-activations lens-std0.01-gradients lens-xavier-activations; do
    [ -s "$pictures/$name.png" ] || { echo "$pictures/$name.png is missing: run scripts/make-pictures.sh and commit"; status=1; }
  done
  [ $status = 0 ] && echo "pictures: the DOT text of $pictures is current, every PNG is there"
  exit $status
fi

mkdir -p "$pictures"
for name in apple-orange network; do
  cp "$work/$name.dot" "$pictures/$name.dot"
  dot -Tpng "$pictures/$name.dot" -o "$pictures/$name.png"
  echo "$pictures/$name.png"
done

# The lens: the book's weight-initialisation experiment (five sigmoid layers of 100) trained for
# two epochs with the weights' std 0.01 and Xavier's (the README's commands).
for init in 0.01 xavier; do
  "$cli" train --activation sigmoid --hidden 100 100 100 100 100 --weight-init $init --epochs 2 \
    --eval-sample 1000 --inspect "$work/lens-$init" >/dev/null
done
cp "$work/lens-0.01/activations.png" "$pictures/lens-std0.01-activations.png"
cp "$work/lens-xavier/activations.png" "$pictures/lens-xavier-activations.png"
echo "$pictures/lens-std0.01-activations.png"
echo "$pictures/lens-xavier-activations.png"
cp "$work/lens-0.01/gradients.png" "$pictures/lens-std0.01-gradients.png"
echo "$pictures/lens-std0.01-gradients.png"

# The page, with test image 0 opened (/#test=0), on a free port of 127.0.0.1.
"$cli" serve --model "$model" --port 0 >"$work/serve.log" 2>&1 &
server=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$work/serve.log" || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.2
done
[ -n "$url" ] || { echo "serve did not start"; cat "$work/serve.log"; exit 1; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,800 \
  --virtual-time-budget=10000 --screenshot="$pictures/page.png" "$url/#test=0" 2>/dev/null
echo "$pictures/page.png"
