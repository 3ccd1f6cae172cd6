set -x
C=/work/corpus/gsm8k-easy
adaptivestep bench prm-quality --corpus $C --questions 20 --eval rest --rest-after 20 --method confidence --backbones smollm2-135m --sizes 16 --folds 2 --train-modes full --train-epochs 3 --train-lr 1e-4 --out full20.json > full20.log 2>&1
adaptivestep bench prm-quality --pair full20.json full20.json --pair-scorer full:smollm2-135m prm:smollm2-135m > pair-full20.log 2>&1
date
