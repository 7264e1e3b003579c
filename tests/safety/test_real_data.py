"""Defect inheritance on real MNIST digits (mnist5k): the backdoored teacher's defect
reaches a plainly fine-tuned student, and ReMoS's slice keeps most of it out.

The slice is the exact-share rule (`ranking="exact-share"`), the one these figures were measured
with; under the reference's ranking (the default) ReMoS's accuracy here was 0.927 against
fine-tuning's 0.969 on 2026-12-05. The numbers in the comments were measured on this machine (seed 0, the app's cpu preset;
about 90 s on 2 shared CPU cores); the assertions keep a margin around them.
"""

import pytest

from kerastl.data import load_image_dataset
from kerastl.safety.attacks import BackdoorTrigger, poison_backdoor
from kerastl.safety.dir import accuracy, backdoor_dir
from kerastl.safety.experiment import BackdoorDefect, FineTuneConfig, TeacherConfig, train_teacher, transfer
from kerastl.safety.slicing import kept_share
from kerastl.safety.tasks import digit_transfer_task

SEED = 0
STEPS, LR = 500, 0.005  # the app's cpu preset
CONFIG = FineTuneConfig(steps=STEPS, batch_size=32, lr=LR, momentum=0.9, weight_decay=1e-4, eval_every=STEPS)


@pytest.fixture(scope="module")
def outcome():
    task = digit_transfer_task(load_image_dataset("mnist5k", seed=SEED), labels_per_class=50, shift="none",
                               seed=SEED)
    trigger = BackdoorTrigger(size=4)
    x, y, poisoned = poison_backdoor(task.x_teacher, task.y_teacher, 0.2, target_class=0, trigger=trigger, seed=SEED)
    teacher = train_teacher(x, y, 10, TeacherConfig(epochs=6, width=16), seed=SEED)
    defect = BackdoorDefect(trigger, target_class=0)
    return {
        "poisoned": len(poisoned), "teacher_images": len(x),
        "teacher_acc": accuracy(teacher, task.x_teacher_test, task.y_teacher_test),
        "teacher_success": backdoor_dir(teacher, task.x_teacher_test, task.y_teacher_test, trigger, 0),
        "finetune": transfer("finetune", teacher, task, CONFIG, defect, seed=SEED),
        "remos": transfer("remos", teacher, task, CONFIG, defect, ratio=0.03, seed=SEED, ranking="exact-share"),
    }


def test_backdoored_teacher_is_accurate_and_obeys_the_trigger(outcome):
    assert outcome["poisoned"] == round(0.2 * outcome["teacher_images"])
    # Measured: accuracy 0.936, attack success 1.000.
    assert outcome["teacher_acc"] > 0.9
    assert outcome["teacher_success"] > 0.9


def test_plain_fine_tuning_inherits_a_large_share_of_the_backdoor(outcome):
    # Measured: DIR 0.777 at accuracy 0.968.
    assert outcome["finetune"].dir > 0.4
    assert outcome["finetune"].accuracy > 0.93


def test_remos_cuts_inherited_dir_by_at_least_half_at_small_accuracy_cost(outcome):
    finetune, remos = outcome["finetune"], outcome["remos"]
    assert kept_share(remos.masks) == pytest.approx(0.97, abs=1e-4)
    # Measured: DIR 0.010 (fine-tune 0.777), accuracy 0.952.
    assert remos.dir < 0.5 * finetune.dir
    assert remos.dir < 0.15
    # The accuracy cost is not the same from run to run: TensorFlow's CPU kernels do not sum in
    # a fixed order, and the teacher's accuracy moves by ~0.7 points. Measured on 2026-12-06:
    # 0.029, 0.014, 0.008 (seeds 0-2, one thread each) and 0.058 (seed 0, the tox run); 0.04
    # failed one run in five, so the bound is 0.08.
    assert remos.accuracy > finetune.accuracy - 0.08
