/usr/bin/python3 bench/peers/numpy_book.py --hidden 50 --batch 100 --iters 2000 --dtype float32
