//! `ModelConfig::from_json` on a `config.json`, then what the page does with an accepted config
//! before fetching any weight (`checkConfigFits`: largest tensor, parameter count), and
//! `to_json`, which must read back to an equal config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lutlab_core::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = ModelConfig::from_json(data, "config.json") else { return };
    let _ = (config.largest_tensor(), config.parameter_count(), config.head_weight_name(), config.names());
    let again = ModelConfig::from_json(config.to_json().as_bytes(), "written config.json").expect("to_json reads back");
    assert_eq!(format!("{again:?}"), format!("{config:?}"), "to_json and from_json changed the config");
    // The per-block lists grow with `n_layer` (up to 2^24); a real model's are short.
    if config.n_layer <= 64 {
        let _ = (config.tensor_shapes(), config.linear_names(), config.input_groups());
    }
});
