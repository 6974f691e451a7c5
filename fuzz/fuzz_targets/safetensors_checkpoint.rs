//! Safetensors checkpoints, one to four shards (split at `NEXT_FILE`), through both readers:
//! `Checkpoint::from_safetensors` (bytes in memory: the page, tests) and `Checkpoint::open`
//! (headers read from disk, tensors when taken: the CLI), with every tensor then read. The two
//! check a file the same way, so they must agree on whether it is a checkpoint and on its
//! tensors. The whole input also goes to `shard_files` as a `model.safetensors.index.json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lutlab_core::checkpoint::{shard_files, Checkpoint};
use lutlab_fuzz::{scratch_file, split_files};

/// Every tensor as `(name, shape, f32 bits)`, or `None` where reading it fails.
type Contents = Vec<(String, Vec<usize>, Option<Vec<u32>>)>;

fn read_every_tensor(checkpoint: &Checkpoint<'_>) -> Contents {
    let names: Vec<String> = checkpoint.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|name| {
            let shape = checkpoint.shape(&name).expect("a listed tensor has a shape").to_vec();
            // `read` adds the shape and finiteness checks to `read_any`.
            let _ = checkpoint.read(&name, &shape);
            let bits = checkpoint.read_any(&name).ok().map(|t| {
                assert_eq!(t.shape.iter().product::<usize>(), t.data.len(), "`{name}`: shape and values disagree");
                t.data.iter().map(|v| v.to_bits()).collect()
            });
            (name, shape, bits)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let _ = shard_files(data, "model.safetensors.index.json");
    let shards = split_files(data, 4);
    let names: Vec<String> = (0..shards.len()).map(|i| format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len())).collect();
    let in_memory = Checkpoint::from_safetensors(names.iter().map(String::as_str).zip(shards.iter().copied()));
    let paths: Vec<_> = names.iter().zip(&shards).map(|(name, bytes)| scratch_file(name, bytes)).collect();
    let on_disk = Checkpoint::open(&paths);
    match (&in_memory, &on_disk) {
        (Ok(a), Ok(b)) => assert_eq!(read_every_tensor(a), read_every_tensor(b), "the two readers read different tensors"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("the readers disagree: from bytes {:?}, from the file {:?}", a.as_ref().err(), b.as_ref().err()),
    }
});
