/usr/bin/python3 bench/peers/torch_peer.py --hidden 50 --batch 100 --iters 2000 --dtype float32 --threads 2
