//! Generation on the GPU (lavapipe in CI): greedy decoding follows the CPU reference forward step
//! by step, a seed fixes the sampled text, a packed 4-bit model generates through the LUT kernels
//! like its dequantized dense twin, and bad requests are refused with a message.

use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::{reference, NoProgress};
use lutlab_model::generate::{argmax, generate, next_token_logits, GenerateSettings, Generation, Sampling, StopReason};
use lutlab_model::Decoder;
use lutlab_tests::*;

const PROMPT: &str = "The game was released in";
/// GPU vs CPU f32 logits of the same weights (the reference_logits bound).
const LOGITS_ABS: f32 = 1e-4;
/// Below this gap between the two best reference logits, an argmax may flip on rounding alone.
const TIE_GAP: f32 = 1e-3;

fn run(model: &Decoder, prompt: &[u32], max_new_tokens: usize, sampling: Sampling) -> Generation {
    let settings = GenerateSettings { max_new_tokens, sampling, stop_token: None };
    pollster::block_on(generate(model, prompt, settings, &mut NoProgress)).expect("generation runs")
}

fn top_two_gap(logits: &[f32]) -> f32 {
    let best = argmax(logits) as usize;
    let second = logits.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
    logits[best] - second
}

#[test]
fn greedy_follows_the_cpu_reference_argmax_step_by_step() {
    let loaded = shipped_model();
    let model = Decoder::new(&loaded.weights, &gpu());
    let vocab = loaded.config().vocab_size;
    let prompt = loaded.tokenizer.encode(PROMPT).unwrap();
    let out = run(&model, &prompt, 16, Sampling::Greedy);
    assert_eq!(out.tokens.len(), 16);
    assert_eq!(out.stopped, StopReason::MaxNewTokens);
    eprintln!("greedy: {PROMPT}|{}", loaded.tokenizer.decode(&out.tokens).unwrap());

    let mut context = prompt.clone();
    let mut checked = 0;
    for &token in &out.tokens {
        let all = reference::forward(&loaded.weights, &context).unwrap();
        let want = &all[all.len() - vocab..];
        // The GPU's next-token row is the reference's last row, and greedy picked its argmax.
        let got = pollster::block_on(next_token_logits(&model, &context)).unwrap();
        assert_all_close(&format!("next-token logits after {} tokens", context.len()), &got, want, LOGITS_ABS);
        if top_two_gap(want) > TIE_GAP {
            assert_eq!(token, argmax(want), "step {}: greedy token differs from the reference argmax", context.len() - prompt.len());
            checked += 1;
        }
        context.push(token);
    }
    assert!(checked >= 14, "only {checked} of 16 steps were clear of near-ties");
}

#[test]
fn a_seed_fixes_the_sampled_text_and_different_seeds_differ() {
    let loaded = shipped_model();
    let model = Decoder::new(&loaded.weights, &gpu());
    let prompt = loaded.tokenizer.encode(PROMPT).unwrap();
    let sampled = |seed| run(&model, &prompt, 12, Sampling::Sample { temperature: 1.0, top_k: 0, seed }).tokens;
    let (a, again, b) = (sampled(7), sampled(7), sampled(8));
    eprintln!("seed 7: {}\nseed 8: {}", loaded.tokenizer.decode(&a).unwrap(), loaded.tokenizer.decode(&b).unwrap());
    assert_eq!(a, again, "the same seed must give the same tokens");
    assert_ne!(a, b, "seeds 7 and 8 gave the same 12 tokens");
    // top-k 1 is greedy whatever the temperature and seed.
    let greedy = run(&model, &prompt, 8, Sampling::Greedy).tokens;
    assert_eq!(run(&model, &prompt, 8, Sampling::Sample { temperature: 3.0, top_k: 1, seed: 99 }).tokens, greedy);
}

/// The shipped model quantized to 4-bit per-channel k-means, packed (f16 tables) and read back.
fn packed_4bit() -> PackedModel {
    let weights = shipped_model().weights;
    let request = QuantizeRequest { method: "kmeans".into(), bits: 4, granularity: "channel".into(), ..QuantizeRequest::default() };
    let method = request.method(&weights, false).unwrap();
    let quantized = quantize_model(&weights, &method, None, Calibration::default(), &mut NoProgress).unwrap();
    let packed = PackedModel::from_quantized(&weights, &quantized, PackedMeta::default(), TableDtype::F16).unwrap();
    PackedModel::from_safetensors("packed.safetensors", &packed.to_safetensors(TableDtype::F16).unwrap()).unwrap()
}

#[test]
fn a_packed_model_generates_through_the_lut_kernels_like_its_dense_twin() {
    let loaded = shipped_model();
    let device = gpu();
    let packed_file = packed_4bit();
    let packed = Decoder::from_packed(&packed_file, &device).unwrap();
    assert!((0..packed.n_blocks()).map(|i| packed.block(i).unwrap()).all(|b| b.linears[2].dense().is_none() && b.linears[0].dense().is_none()), "layers run packed");
    let dense = Decoder::new(&packed_file.dequantized_weights().unwrap(), &device);
    let original = Decoder::new(&loaded.weights, &device);
    let prompt = loaded.tokenizer.encode(PROMPT).unwrap();

    // First step: the LUT kernels and burn's dense matmul on the same (dequantized) weights agree
    // to f32 rounding of differently ordered sums.
    let from_codes = pollster::block_on(next_token_logits(&packed, &prompt)).unwrap();
    let from_dense = pollster::block_on(next_token_logits(&dense, &prompt)).unwrap();
    let err = assert_all_close("packed vs dequantized first-step logits", &from_codes, &from_dense, 1e-3);

    let (p, d, o) = (run(&packed, &prompt, 16, Sampling::Greedy), run(&dense, &prompt, 16, Sampling::Greedy), run(&original, &prompt, 16, Sampling::Greedy));
    let same = p.tokens.iter().zip(&d.tokens).filter(|(a, b)| a == b).count();
    let text = |g: &Generation| loaded.tokenizer.decode(&g.tokens).unwrap();
    eprintln!("first-step max |logit diff| {err:e}; {same}/16 greedy tokens equal\npacked:   {}\ndense:    {}\noriginal: {}", text(&p), text(&d), text(&o));
    assert_eq!(p.tokens, d.tokens, "greedy tokens of the packed model and its dense twin");
    // Sampling goes through the same kernels: the same seed gives the same text on both.
    let sampling = Sampling::Sample { temperature: 0.8, top_k: 40, seed: 3 };
    assert_eq!(run(&packed, &prompt, 12, sampling).tokens, run(&dense, &prompt, 12, sampling).tokens);
}

#[test]
fn bad_prompts_are_refused_and_the_context_limit_stops_generation() {
    let loaded = shipped_model();
    let model = Decoder::new(&loaded.weights, &gpu());
    let n_positions = loaded.config().n_positions;
    let settings = GenerateSettings { max_new_tokens: 8, sampling: Sampling::Greedy, stop_token: None };
    let error = |prompt: &[u32], settings| pollster::block_on(generate(&model, prompt, settings, &mut NoProgress)).unwrap_err().to_string();

    assert!(error(&[], settings).contains("the prompt is empty"));
    let too_long = vec![464u32; n_positions + 1];
    assert!(error(&too_long, settings).contains(&format!("the prompt has {} tokens but the model's context holds {n_positions}", n_positions + 1)));
    assert!(error(&[464, 60000], settings).contains("token id 60000 is outside the vocabulary"));
    let cold = GenerateSettings { sampling: Sampling::Sample { temperature: 0.0, top_k: 0, seed: 0 }, ..settings };
    assert!(error(&[464], cold).contains("temperature must be a positive number"));

    // Three tokens short of the context: the positions left predict 3 more tokens, then it stops.
    let long: Vec<u32> = loaded.tokenizer.encode(&std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap()[..4000]).unwrap()[..n_positions - 2].to_vec();
    let out = run(&model, &long, 8, Sampling::Greedy);
    assert_eq!((out.tokens.len(), out.stopped), (3, StopReason::ContextFull));
}
