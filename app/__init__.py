"""rayfeed domain core: plain Python, NumPy, PyTorch, FAISS and redis-py. Never imports Ray."""
