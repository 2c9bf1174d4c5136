"""FaceA-Net training nodes: Train Face (FaceA) and Transplant Attribute (FaceA)."""

from __future__ import annotations

from comfy_api.latest import io

from ..models.errors import LikenessError
from ..models.facea import CLASS_WORDS, LOCAL_TASKS, feat_token_count
from .facea_schema import ATTRIBUTES, CATEGORY, OUTPUTS, common_inputs, outputs, train_inputs
from .facea_train import MAX_PHOTOS, run_facea_training, train_options
from .sockets import FaceAIdentityType


class LikenessTrainFaceA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_TrainFaceA",
            display_name="Likeness Train Face (FaceA)",
            category=CATEGORY,
            search_aliases=["facea", "face lora", "train identity", "test-time fine-tuning", "face-a-net"],
            description=(
                "FaceA-Net attribute-driven fine-tuning: learns a person from 1-10 photos as a rank-48 UNet LoRA "
                "plus [feat] vectors for the prompts 'a <class> face' and 'a <class> left eye / right eye / nose / "
                "mouth', with the masked inpainting loss of one global and one random local task per step. Needs "
                "an SD1.5 inpainting model (plain SD1.5 works, with a warning); SDXL is refused. Minutes per step "
                "on a CPU: use a GPU. Nothing is written until Save FaceA Identity."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="An SD1.5 inpainting MODEL (e.g. sd-v1-5-inpainting; CreativeML "
                    "OpenRAIL-M). Not SDXL: make the scene with SDXL, refine the face with SD1.5.",
                ),
                io.Clip.Input("clip", tooltip="The CLIP of that checkpoint (encodes the task prompts)."),
                io.Vae.Input("vae", tooltip="The VAE of that checkpoint (encodes the face crops)."),
                io.Image.Input(
                    "images",
                    tooltip=f"1 to {MAX_PHOTOS} photos of ONE person (the paper uses 3); "
                    "each is cropped around its largest face.",
                ),
                io.Combo.Input(
                    "class_word",
                    options=list(CLASS_WORDS),
                    default="person",
                    tooltip="Class word of the prompts ('a woman face'...). The paper uses the person's "
                    "gender; it also sets the [feat] vector count (man 3, woman 4, person 4).",
                ),
                *common_inputs(600),
                *train_inputs(),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        images,
        class_word,
        rank,
        feat_tokens,
        train_eye_left,
        train_eye_right,
        train_nose,
        train_mouth,
        lora_targets,
        resolution,
        crop_factor,
        mask_grow,
        face_analyzer=None,
        **common,
    ) -> io.NodeOutput:
        chosen = [train_eye_left, train_eye_right, train_nose, train_mouth]
        opts = train_options(
            common,
            local_tasks=tuple(t for t, on in zip(LOCAL_TASKS, chosen, strict=True) if on),
            rank=rank,
            class_word=class_word,
            feat_tokens=feat_token_count(class_word, feat_tokens),
            resolution=resolution,
            crop_factor=crop_factor,
            mask_grow=mask_grow,
            lora_targets=lora_targets,
        )
        return outputs(run_facea_training(model, clip, vae, images, face_analyzer, opts))


class LikenessTransplantFaceAAttribute(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_TransplantFaceAAttribute",
            display_name="Likeness Transplant Attribute (FaceA)",
            category=CATEGORY,
            search_aliases=["facea transplant", "swap eyes", "attribute transplant", "borrow nose"],
            description=(
                "FaceA-Net attribute transplant: continues training a FaceA identity for about 100 steps on one "
                "attribute (eyes, nose or mouth) of ANOTHER person's photos, so the identity takes that person's "
                "attribute. Only the local task of that attribute is trained; the face task and the other prompts "
                "keep what they learned. Crop settings and LoRA come from the identity."
            ),
            inputs=[
                FaceAIdentityType.Input(
                    "identity", tooltip="The identity to change (from Train Face or Load FaceA Identity)."
                ),
                io.Model.Input("model", tooltip="The SD1.5 (inpainting) MODEL the identity was trained on."),
                io.Vae.Input("vae", tooltip="The VAE of that checkpoint."),
                io.Image.Input("images", tooltip=f"1 to {MAX_PHOTOS} photos of the person whose attribute is taken."),
                io.Combo.Input(
                    "attribute",
                    options=list(ATTRIBUTES),
                    default="eyes",
                    tooltip="Which attribute to take from the photos ('eyes' trains both eye tasks).",
                ),
                *common_inputs(100),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(cls, identity, model, vae, images, attribute, face_analyzer=None, **common) -> io.NodeOutput:
        tasks = ATTRIBUTES[attribute]
        if not set(tasks) <= set(identity.tasks):
            raise LikenessError(f"this identity has no prompt for {attribute!r} (it has {list(identity.tasks)})")
        prev, lora = identity.meta.get("recipe", {}), identity.meta.get("lora", {})
        opts = train_options(  # crop settings and LoRA as the identity was trained
            common,
            global_task=False,
            local_tasks=tasks,
            rank=int(lora.get("rank", 48)),
            class_word=identity.class_word,
            feat_tokens=identity.slots["face"].count,
            resolution=int(prev.get("resolution", 512)),
            crop_factor=float(prev.get("crop_factor", 2.0)),
            mask_grow=int(prev.get("mask_grow", 8)),
            lora_targets=lora.get("targets", "attention"),
        )
        return outputs(run_facea_training(model, None, vae, images, face_analyzer, opts, init=identity))


FACEA_TRAIN_NODES = [LikenessTrainFaceA, LikenessTransplantFaceAAttribute]
