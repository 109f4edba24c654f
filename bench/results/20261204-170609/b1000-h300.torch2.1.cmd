/usr/bin/python3 bench/peers/torch_peer.py --hidden 300 --batch 1000 --iters 2000 --dtype float32 --threads 2
