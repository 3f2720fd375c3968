#!/bin/bash
# GPU check: CUDA training/evaluation throughput and the discrete likelihoods on Fashion-MNIST.
# usage: bash benchmarks/cuda_check.sh DEVICE EPOCHS K NEX OUTDIR
#   DEVICE cuda (or cpu, to try the script); EPOCHS of the MNIST MLP runs (fp32, bf16,
#   compiled); K importance samples on NEX test images spread through Fashion-MNIST's test set
#   after 5 epochs of the categorical and the mixture likelihood (FEP=N: N epochs); KM: K of the
#   MNIST estimate (default 5000, all 10,000 images). DATA: the folder holding mnist/ and
#   fashion-mnist/ (default ../shared/data); PYTHON: the interpreter holding vaekit (default
#   python3). Logs and JSON results go to OUTDIR; runs to a fresh temporary folder.
set -u
DEV=$1; EP=$2; K=$3; NEX=$4; O=$5
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}; V="$PY -m vaekit"
D=${DATA:-../shared/data}; R=$(mktemp -d); mkdir -p $O
t() { local log=$1; shift; local s=$(date +%s.%N); timeout ${TMO:-150} "$@" > $log 2>&1; local rc=$?; echo "TIME $($PY -c "print(round($(date +%s.%N)-$s,1))") s rc=$rc: ${*:1:14}"; [ $rc -eq 0 ] || tail -n 5 $log; }
ips() { $PY -c "import json,sys; h=[json.loads(l) for l in open(sys.argv[1])]; print(sys.argv[1].split('/')[-2], 'images/s per epoch', [round(e['images_per_second']) for e in h], 'val_elbo', [round(e['val_elbo'],2) for e in h])" $1/metrics.jsonl; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
for P in fp32 bf16; do
  t $O/mlp-$P.log $V train --data mnist --data-dir $D/mnist --epochs $EP --device $DEV --precision $P --no-progress --no-report --out $R/mlp-$P; ips $R/mlp-$P
done
TMO=240 t $O/mlp-compile.log $V train --data mnist --data-dir $D/mnist --epochs $EP --device $DEV --compile --no-progress --no-report --out $R/mlp-compile; ips $R/mlp-compile
t $O/mlp-fp32.is.json $V evaluate $R/mlp-fp32 --json --num-samples ${KM:-5000} --device $DEV --no-progress; tail -c 300 $O/mlp-fp32.is.json; echo
for L in categorical discretized-logistic-mixture; do
  t $O/fm-$L.log $V train --data fashion-mnist --data-dir $D/fashion-mnist --likelihood $L --epochs ${FEP:-5} --device $DEV --no-progress --no-report --out $R/fm-$L; ips $R/fm-$L
  t $O/fm-$L.elbo.json $V evaluate $R/fm-$L --json --num-samples 0 --device $DEV --no-progress
  t $O/fm-$L.elbo-cpu.json $V evaluate $R/fm-$L --json --num-samples 0 --device cpu --no-progress
  t $O/fm-$L.is.json $V evaluate $R/fm-$L --json --num-samples $K --num-examples $NEX --spread --device $DEV --no-progress
  $PY -c "
import json
def last(p): return json.loads([l for l in open(p) if l.startswith('{')][-1])
g=last('$O/fm-$L.elbo.json'); c=last('$O/fm-$L.elbo-cpu.json'); i=last('$O/fm-$L.is.json')
print('$L', 'test ELBO $DEV', g['elbo'], 'cpu', c['elbo'], 'diff', g['elbo']-c['elbo'], '| bits/dim', i.get('bits_per_dim'), 'log p(x)', i['log_likelihood'], '+-', i['log_likelihood_stderr'], 'IS s', i.get('log_likelihood_seconds'))"
done
