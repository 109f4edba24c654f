/usr/bin/python3 bench/peers/torch_peer.py --hidden 1000 1000 1000 1000 --batch 100 --iters 2000 --dtype float32 --threads 2
