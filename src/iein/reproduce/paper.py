"""The paper's published numbers (Lu et al., COLING 2020), each citing its table: the one
place ``iein report`` takes them from."""
from __future__ import annotations

from typing import Any


#: Table 1, row "Our Approach" (IEMOCAP test, per-class F1 and weighted average, 12 runs).
PAPER_TABLE1_IEMOCAP: dict[str, float] = {
    "happy": 53.17, "sad": 77.19, "neutral": 61.31, "anger": 61.45, "excited": 69.23, "frustrated": 60.92,
    "w-Avg.": 64.37,
}
#: Table 2, row "Our Approach" (MELD test).
PAPER_TABLE2_MELD: dict[str, float] = {
    "neutral": 77.52, "surprise": 53.65, "fear": 3.31, "sadness": 23.62, "joy": 56.63, "disgust": 19.38,
    "anger": 48.88, "w-Avg.": 60.72,
}
PAPER_MAIN = {"iemocap": PAPER_TABLE1_IEMOCAP, "meld": PAPER_TABLE2_MELD}
#: Table 1, the baseline rows (IEMOCAP test, per-class F1 and weighted average; section 3.2:
#: the baselines re-run "in the same setting", CNN utterance features).
PAPER_TABLE1_BASELINES: dict[str, dict[str, float]] = {
    "cnn": {"happy": 32.91, "sad": 50.41, "neutral": 52.33, "anger": 55.24, "excited": 46.84,
            "frustrated": 54.51, "w-Avg.": 50.15},
    "clstm": {"happy": 30.66, "sad": 69.86, "neutral": 55.15, "anger": 58.52, "excited": 55.93,
              "frustrated": 60.74, "w-Avg.": 57.01},
    "clstm_crf": {"happy": 35.71, "sad": 69.59, "neutral": 56.43, "anger": 62.44, "excited": 50.34,
                  "frustrated": 60.23, "w-Avg.": 56.98},
    "dialoguernn": {"happy": 38.74, "sad": 76.08, "neutral": 58.26, "anger": 63.10, "excited": 68.75,
                    "frustrated": 60.37, "w-Avg.": 62.15},
    "dialoguegcn": {"happy": 51.87, "sad": 76.76, "neutral": 56.76, "anger": 62.26, "excited": 72.71,
                    "frustrated": 58.04, "w-Avg.": 63.16},
}
#: Table 2, the baseline rows (MELD test).
PAPER_TABLE2_BASELINES: dict[str, dict[str, float]] = {
    "cnn": {"neutral": 77.24, "surprise": 50.54, "fear": 0.32, "sadness": 22.28, "joy": 54.19, "disgust": 2.86,
            "anger": 42.88, "w-Avg.": 58.48},
    "clstm": {"neutral": 76.47, "surprise": 50.17, "fear": 0.92, "sadness": 26.51, "joy": 55.62, "disgust": 9.65,
              "anger": 46.77, "w-Avg.": 59.33},
    "clstm_crf": {"neutral": 76.42, "surprise": 50.22, "fear": 1.48, "sadness": 26.29, "joy": 55.58,
                  "disgust": 8.51, "anger": 46.96, "w-Avg.": 59.29},
    "dialoguernn": {"neutral": 76.23, "surprise": 49.59, "fear": 0.00, "sadness": 26.33, "joy": 54.55,
                    "disgust": 0.81, "anger": 46.76, "w-Avg.": 58.73},
    "dialoguegcn": {"neutral": 76.02, "surprise": 46.37, "fear": 0.98, "sadness": 24.32, "joy": 53.62,
                    "disgust": 1.22, "anger": 43.03, "w-Avg.": 57.52},
}
PAPER_BASELINES = {"iemocap": PAPER_TABLE1_BASELINES, "meld": PAPER_TABLE2_BASELINES}
#: The paper's row names of the baselines (section 3.2).
BASELINE_NAME = {"cnn": "CNN", "clstm": "cLSTM", "clstm_crf": "cLSTM+CRF", "dialoguernn": "DialogueRNN",
                 "dialoguegcn": "DialogueGCN"}
#: The paper's column names -> our label names.
PAPER_COLUMN_LABEL = {"iemocap": {"anger": "angry"}, "meld": {}}
#: Table 3 (weighted F1): No Label, "Our Approach, iter = 1/2/3", Gold Label.
PAPER_TABLE3: dict[str, dict[Any, float]] = {
    "iemocap": {"no_label": 60.22, 1: 61.22, 2: 63.66, 3: 64.37, "gold_label": 66.75},
    "meld": {"no_label": 59.91, 1: 60.07, 2: 60.72, 3: 60.64, "gold_label": 62.28},
}
#: Table 4: w-F1 of step i (paper steps 1..T = our P^1..P^T) and the R->W / W->R / W->W
#: shares (%) of the changed predictions between steps i and i+1.
PAPER_TABLE4: dict[str, dict[str, Any]] = {
    "iemocap": {"steps": {1: 61.97, 2: 63.71, 3: 64.37},
                "corrections": {(1, 2): (27.84, 46.25, 25.91), (2, 3): (27.81, 47.78, 24.41)}},
    "meld": {"steps": {1: 60.45, 2: 60.72}, "corrections": {(1, 2): (32.53, 39.86, 27.61)}},
}
#: Section 3.5 / Figure 3: the best maximum iteration number (the figure's values are not
#: printed in the paper; its T = 1..3 points are Table 3's).
PAPER_BEST_T = {"iemocap": 3, "meld": 2}
#: Section 3.1: dialogues and utterances of the whole dataset.
PAPER_DATA_SIZE = {"iemocap": (152, 7433), "meld": (1433, 13708)}
#: Section 3.3.
PAPER_VECTORS = {"name": "GloVe 840B", "dim": 300}
PAPER_SETTINGS = {
    "iemocap": {"lr": 2e-4, "lam": 50.0, "batch_size": 32, "weight_decay": 1e-4,
                "utterance_hidden": 50, "emotion_dim": 32, "dropout": 0.1, "iterations": 3},
    "meld": {"lr": 1e-4, "lam": 5.0, "batch_size": 32, "weight_decay": 1e-4,
             "utterance_hidden": 100, "emotion_dim": 32, "dropout": 0.1, "iterations": 2},
}
PAPER_RUNS = 12  # section 3.4: "we repeat the experiment 12 times"
DATASET_TITLE = {"iemocap": "IEMOCAP", "meld": "MELD"}
