"""A server built the way the original student projects did it, as the baseline for
bench_serve.py: FastAPI, PIL, and the network called eagerly in the framework for every
request (here torch, with the same cnn-small architecture), no ONNX, no care for threads.

Run: python bench/naive_server.py PORT
"""

from __future__ import annotations

import io
import sys
from typing import Annotated

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from imgclass.models import create_model

app = FastAPI()
model = create_model("cnn-small", 20)
model.eval()
LABELS = [f"class{i}" for i in range(20)]


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict:
    img = Image.open(io.BytesIO(await file.read())).convert("L").resize((28, 28))
    x = 1.0 - np.asarray(img, dtype=np.float32) / 255.0
    probs = torch.softmax(model(torch.tensor(x).reshape(1, 1, 28, 28)), dim=1)[0].detach().numpy()
    top = np.argsort(-probs)[:3]
    return {"predictions": [{"label": LABELS[i], "probability": float(probs[i])} for i in top]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
