#!/usr/bin/env bash
# Makes the pictures of the README's "See backprop" section with the program itself, into
# docs/pictures: the shopping graph and a network trace (the DOT text `backprop graph` writes, and
# the PNG Graphviz draws from it), and a screenshot of `backprop serve`'s page (headless Chromium).
#
#   scripts/make-pictures.sh          regenerate everything (needs Debian's graphviz and chromium)
#   scripts/make-pictures.sh --check  regenerate the DOT text only and fail if it differs from the
#                                     committed .dot files (PNG bytes depend on the Graphviz build,
#                                     so the text is what is compared)
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
  [ $status = 0 ] && echo "pictures: the DOT text of $pictures is current"
  exit $status
fi

mkdir -p "$pictures"
for name in apple-orange network; do
  cp "$work/$name.dot" "$pictures/$name.dot"
  dot -Tpng "$pictures/$name.dot" -o "$pictures/$name.png"
  echo "$pictures/$name.png"
done

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
