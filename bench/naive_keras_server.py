"""The student projects' server, as they wrote it: FastAPI, PIL, and a Keras model whose
``model.predict`` is called for every request (the Pictionary project's cnn-small,
Conv 32 -> pool -> Conv 64 -> pool -> dropout -> dense, 20 classes). Baseline for
bench_serve.py --naive keras.

Needs TensorFlow, which imgclass does not depend on; give it its own environment:
  python3 -m venv /work/tfvenv
  /work/tfvenv/bin/pip install tensorflow-cpu fastapi uvicorn python-multipart pillow
Run: /work/tfvenv/bin/python bench/naive_keras_server.py PORT
"""

from __future__ import annotations

import io
import os
import sys
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, File, UploadFile  # noqa: E402
from PIL import Image  # noqa: E402
from tensorflow import keras  # noqa: E402

LABELS = [f"class{i}" for i in range(20)]
model = keras.Sequential(
    [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(len(LABELS), activation="softmax"),
    ]
)
app = FastAPI()


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict:
    img = Image.open(io.BytesIO(await file.read())).convert("L").resize((28, 28))
    x = 1.0 - np.asarray(img, dtype=np.float32) / 255.0
    probs = model.predict(x.reshape(1, 28, 28, 1), verbose=0)[0]
    top = np.argsort(-probs)[:3]
    return {"predictions": [{"label": LABELS[i], "probability": float(probs[i])} for i in top]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
