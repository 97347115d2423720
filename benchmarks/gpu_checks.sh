#!/usr/bin/env bash
# The GPU rows of the test suite and the GPU benchmarks, in one command, on a CUDA machine with
# torch, triton and lightning installed:
#   bash benchmarks/gpu_checks.sh [STAGE ...]     STAGE: tests scan long sampling decode quality species ddp
# Logs and JSON go to $OUT (default runs/gpu_checks). A folder .whl/ of wheels, if present, is
# installed first into a private site folder (for machines without a package index).
set -uo pipefail
out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import seqmodels" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests scan long sampling decode)
for stage in "${stages[@]}"; do
    echo "=== $stage $(date -u +%H:%M:%S)"
    case "$stage" in
        tests) timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider --timeout 240 -rf 2>&1 | tee "$out/gpu_tests.log" | tail -15 ;;
        scan) timeout 200 python3 -m benchmarks.selective_scan --json "$out/scan.json" 2>&1 | tee "$out/scan.log" | tail -9 ;;
        long) timeout 200 python3 -m benchmarks.long_context --steps 5 --warmup 2 --json "$out/long.json" 2>&1 | tee "$out/long.log" | tail -11
              timeout 120 python3 -m benchmarks.long_context --task classifier --preset 7m --lengths 1048576 --steps 3 --warmup 1 \
                  --json "$out/long_classifier.json" 2>&1 | tee "$out/long_classifier.log" | tail -4 ;;
        sampling) timeout 300 python3 -m benchmarks.sampling 2>&1 | tee "$out/sampling.log" | tail -28 ;;
        decode) timeout 300 python3 -m benchmarks.decode_step 2>&1 | tee "$out/decode_step.log" | tail -30 ;;
        quality) timeout 420 python3 -m benchmarks.dna_quality --max-time "${QUALITY_TIME:-00:00:04:00}" --out "$out/dna_quality" 2>&1 \
                  | tee "$out/dna_quality.log" | grep -vE "^\s*$|it/s|Epoch" | tail -16 ;;
        species) timeout 480 python3 -m benchmarks.species_context --max-steps "${SPECIES_STEPS:-400}" --out "$out/species_context" 2>&1 \
                  | tee "$out/species_context.log" | grep -vE "it/s|Epoch" | tail -12 ;;
        ddp) NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 timeout 300 python3 -m seqmodels fit \
                  --config configs/dna/hg38_1.4m.yaml --data.fasta data/human_segments/segments.fa --data.bed data/human_segments/segments.bed \
                  --trainer.devices 2 --trainer.strategy ddp --trainer.max_steps 200 --trainer.val_check_interval 100 \
                  --data.batch_size 64 --trainer.accumulate_grad_batches 1 --data.num_workers 4 --trainer.enable_progress_bar false \
                  --trainer.logger.init_args.save_dir "$out/ddp" 2>&1 | tee "$out/ddp.log" | grep -vE "^\s*$" | tail -12 ;;
        ddp_species) g=data/species/full/aureus
              NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 timeout 300 python3 -m seqmodels fit \
                  --config configs/dna/species_tiny.yaml --model.preset 1.4m --model.backbone '{checkpointing: true}' \
                  --data.genomes "{COL: $g/COL.fa, JKD6008: $g/JKD6008.fa, N315: $g/N315.fa, RF122: $g/RF122.fa, USA300_FPR3757: $g/USA300_FPR3757.fa}" \
                  --data.split_fractions '[0.8, 0.1, 0.1]' --data.seq_len 16384 --data.batch_size 4 --data.train_samples_per_epoch 800 \
                  --data.val_samples 100 --data.test_samples 100 --trainer.devices 2 --trainer.strategy ddp --trainer.accelerator gpu \
                  --trainer.precision bf16-mixed --trainer.max_epochs 1 --trainer.enable_progress_bar false \
                  --trainer.logger.init_args.save_dir "$out/ddp_species" 2>&1 | tee "$out/ddp_species.log" | grep -vE "^\s*$" | tail -12 ;;
        *) echo "unknown stage $stage" ;;
    esac
done
