//! lutlab's packed model file (docs/FORMAT.md) through both readers: `PackedModel::from_safetensors`
//! (bytes: the page) and `PackedModel::read_file` (a tensor at a time from disk: the CLI), which
//! must agree. A file that is accepted must then be usable: dequantized, and written back to a
//! file that reads as the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lutlab_core::packed_file::{PackedModel, TableDtype};
use lutlab_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    let in_memory = PackedModel::from_safetensors("fuzz.safetensors", data);
    let on_disk = PackedModel::read_file(&scratch_file("packed.safetensors", data));
    let model = match (in_memory, on_disk) {
        (Ok(a), Ok(b)) => {
            // Debug text, so that a NaN compares equal to itself.
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "the two readers read different models");
            a
        }
        (Err(_), Err(_)) => return,
        (a, b) => panic!("the readers disagree: from bytes {:?}, from the file {:?}", a.err(), b.err()),
    };
    let _ = (model.format_version(), model.packed_bytes(), model.f16_bytes_of_packed_layers());
    let _ = model.dequantized_weights();
    let written = model.to_safetensors(TableDtype::F32).expect("an accepted model can be written");
    let again = PackedModel::from_safetensors("rewritten.safetensors", &written).expect("a written model reads back");
    assert_eq!(format!("{again:?}"), format!("{model:?}"), "writing and reading changed the model");
});
