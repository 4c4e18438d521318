"""The native decoder over the test rows, sharded across processes: with ``evaluate.num_processes`` > 1 the
stage runs under ``accelerate launch``, each process decodes every N-th test row into its shard file, and
rank 0 merges the shards in test-row order, checking that each row is where it should be. The merge streams
into ``predictions.json`` and the scores, so memory does not grow with the number of test rows."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.console import console, progress, report_rate
from harness.errors import HarnessError
from harness.embed.cache import model_fingerprint
from harness.evaluate.protocol import TestProtocol
from harness.evaluate.exact import exact_ranking
from harness.evaluate.resume import open_shard, run_fingerprint, write_chunk
from harness.evaluate.unconstrained import unconstrained
from harness.params import EvaluateParams
from harness.train.model import load_model


class NativeRun:
    """One model decoded by every process into its shard file (JSON lines ``[row, beams]``, written as the
    beams come); rank 0 then merges the shards in test-row order straight into ``predictions.json``, scoring
    as it goes. Memory stays bounded by the decoder's chunk, not by the number of test rows."""

    def __init__(self, p: EvaluateParams, t: TestProtocol, model: str, lm, tokenizer, prompts: list, trie,
                 as_text, shard_dir: Path, processes: int, rendered: bool, suffix: list[int]):
        self.p, self.t, self.model, self.lm, self.tokenizer = p, t, model, lm, tokenizer
        self.prompts, self.trie, self.as_text, self.rendered = prompts, trie, as_text, rendered
        self.shard_dir, self.processes, self.suffix = shard_dir, processes, suffix

    def merge(self, predictions: Path) -> tuple[dict, dict | None, dict | None]:
        """Write predictions.json (upstream's format, test-split order); the scores, the unconstrained
        comparison and the exact ranking of the first rows. The shard files are removed afterwards."""
        import json
        import shutil

        from harness.decode.constrained import generation_config
        from harness.evaluate.score import Scorer
        from harness.io import JsonListWriter

        t, tok = self.t, self.tokenizer
        scorer = Scorer(t.info_sids, t.ks)
        n_free = len(t.rows) if self.p.unconstrained_rows is None else min(self.p.unconstrained_rows, len(t.rows))
        n_exact = len(t.rows) if self.p.exact_rows is None else min(self.p.exact_rows, len(t.rows))
        head: list[dict] = []  # the first rows' records, for the unconstrained comparison and the exact ranking
        shards = [(self.shard_dir / f"rank-{r}.jsonl").open(encoding="utf-8") for r in range(self.processes)]
        try:
            with predictions.open("w", encoding="utf-8") as fh:
                out = JsonListWriter(fh, indent=4)
                for i in range(len(t.rows)):
                    line = shards[i % self.processes].readline()
                    row, beams = json.loads(line) if line else (None, None)
                    if row != i:
                        raise HarnessError(f"evaluate {self.model}: the {self.processes} shards do not hold test row "
                                           f"{i} where expected (of {len(t.rows)} rows)")
                    rec = t.record(i, beams, tok.decode(self.prompts[i]) if self.rendered else None)
                    out.add(rec)
                    scorer.add(rec)
                    if i < max(n_free, n_exact):
                        head.append(rec)
                out.close()
            if any(f.readline() for f in shards):
                raise HarnessError(f"evaluate {self.model}: the shards hold more rows than the {len(t.rows)} test rows")
        finally:
            for f in shards:
                f.close()
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        gc = generation_config(t.num_beams, self.trie.max_len, tok.eos_token_id, tok.pad_token_id).to_dict()
        generation = {k: gc.get(k) for k in ("num_beams", "num_return_sequences", "do_sample", "temperature",
                                              "top_k", "top_p", "repetition_penalty", "length_penalty",
                                              "max_new_tokens")}
        scores = {"model": self.model, "scored": True, "evaluator": "native", "metrics": scorer.result(),
                  "protocol": {**t.protocol, "generation": generation, "processes": self.processes,
                               "chunk_rows": self.p.chunk_rows,
                               "dtype": self.p.dtype, "prompts": "upstream" if self.rendered else "harness"}}
        free = unconstrained(self.p, t, self.lm, tok, self.prompts, head[:n_free], self.trie.max_len, self.as_text)
        exact = exact_ranking(self.p, t, self.lm, tok, self.prompts, head[:n_exact], self.suffix)
        self.lm = None  # the upstream run of backend both loads the model again, in its own processes
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return scores, free, exact


def native_decode(p: EvaluateParams, t: TestProtocol, model: str, model_dir: Path, shard_dir: Path,
                   prompt_source) -> NativeRun | None:
    """The native constrained decoder over this process's rows (every N-th), streamed to its shard file;
    rank 0 gets the run to merge, the other ranks None."""
    from accelerate import PartialState

    from harness.decode.constrained import catalogue_trie, iter_constrained_beam_search

    state = PartialState(cpu=not torch.cuda.is_available())
    lm, tokenizer = load_model(model_dir, state.device, getattr(torch, p.dtype))
    prompts: list = t.prompts
    if p.prompts == "upstream" and prompt_source is None:
        raise HarnessError("evaluate.prompts: upstream needs the upstream layer to render them (run the stage "
                           "through `harness evaluate`)")
    if prompt_source is not None:  # e.g. upstream's own prompt ids, and its answer format "SID\n" + EOS
        prompts = prompt_source(t, model_dir)
        suffix = tokenizer("\n", add_special_tokens=False).input_ids
        trie = catalogue_trie(tokenizer, t.index, model_dir, suffix)
        as_text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    else:
        suffix = []
        trie = catalogue_trie(tokenizer, t.index, model_dir)
        as_text = lambda ids: "".join(tokenizer.convert_ids_to_tokens(ids))  # noqa: E731
    mine = list(range(state.process_index, len(t.rows), state.num_processes))  # this process's shard
    fingerprint = run_fingerprint(model_fingerprint(model_dir), [prompts[i] for i in mine], list(t.catalogue), {
        "num_beams": t.num_beams, "batch_size": p.batch_size, "chunk_rows": p.chunk_rows, "dtype": p.dtype,
        "processes": state.num_processes, "rank": state.process_index, "answer": "upstream" if
        prompt_source is not None else "harness"})
    shard, resumed = open_shard(shard_dir, state.process_index, mine, fingerprint, p.chunk_rows)
    if resumed.discarded:
        console.print(f"{model}: the partial evaluation in {shard_dir} was not used ({resumed.discarded}); "
                      "starting over")
    if resumed.done:
        console.print(f"{model}: resuming evaluation at row {resumed.done} of {len(mine)}"
                      + (f" (process {state.process_index})" if state.num_processes > 1 else "")
                      + f": {resumed.done // p.chunk_rows} complete chunk(s) of {p.chunk_rows} kept")
    todo = mine[resumed.done:]
    with progress(disable=not state.is_main_process, unit="rows") as bar, shard:
        task = bar.add_task(f"{model}: constrained beam search ({t.num_beams} beams)", total=len(mine),
                            completed=resumed.done)
        done = 0
        for chunk in iter_constrained_beam_search(lm, tokenizer, [prompts[i] for i in todo], trie, t.num_beams,
                                                  p.batch_size, chunk_rows=p.chunk_rows,
                                                  progress=lambda n: bar.advance(task, n)):
            write_chunk(shard, todo[done:done + len(chunk)], [[as_text(b) for b in r.sequences] for r in chunk])
            done += len(chunk)
            if state.is_main_process:
                report_rate(bar, task, model)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return NativeRun(p, t, model, lm, tokenizer, prompts, trie, as_text, shard_dir, state.num_processes,
                     prompt_source is not None, suffix)
