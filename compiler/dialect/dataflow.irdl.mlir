// The `dataflow` dialect as upstream MLIR sees it: an IRDL contract for the generic form that
// `codesign compile --emit-mlir F --mlir-generic` writes (properties printed as attributes).
//
// Load it with `irdl.load_dialects` (Python bindings) or an opt tool, e.g. the torch-mlir wheel's
// `torch-mlir-opt --irdl-file=compiler/dialect/dataflow.irdl.mlir --verify-each model.mlir`; upstream MLIR then
// parses and verifies our modules. tests/test_dialect_irdl.py does both and keeps this file in step
// with compiler/dialect/dataflow.py: same ops, same operand/result names and arity, same required properties,
// same choice lists (SOFTMAX_APPROX, GELU_APPROX, ...).
//
// What IRDL cannot say, and so only the xDSL verifiers check:
// - shapes (contraction dims, head split, "shape unchanged"). A constraint variable used twice means "the same
//   type", which would also force equal element types, so every operand and result gets its own variable;
// - element types inside tensors (builtin types have no IRDL parameter definitions): `!builtin.tensor` is any
//   ranked tensor of any element type; unranked tensors are rejected;
// - optional properties (`attention.lanes`, `attention.kv_heads`, `attention.mask_kind`, `attention.softcap`,
//   `attention.sinks`, `attention.masked_rows_zero`, `attention.causal_first`, `elementwise.attrs`, `move.attrs`)
//   and the scheduler's discardable attributes (`start`, `end`, `tiles`): IRDL has no optional attributes and
//   ignores attributes it does not list;
// - the width of integer properties: `#builtin.integer` accepts any integer type (we print i64), except where a
//   value list pins it (`requant.out_bits`);
// - at least one input for `elementwise`, `top_k <= num_experts`, axes in range.
//
// Variadic operand lists: IRDL checks every element of a variadic group against ONE constraint variable, and a
// variable binds to the first type it meets, so a variadic group must be homogeneous (IRDLVerifiers.cpp,
// ConstraintVerifier::verify). Ours are not: gather (data, i64 indices), concat of different extents, where (i1
// condition, values), broadcasting add. So `elementwise.inputs` and `move.inputs` / `move.outputs` are split into
// a first element with its own variable plus a variadic rest ("<name>_rest"); all emitted IR fits that shape
// (tests/test_dialect_irdl.py pins it). Upstream wrongly rejects what still differs inside the rest: a 3-way
// concat of three extents, where(c, x, y) with x and y of different types, an uneven split. The alternative,
// one optional operand per position, needs an `operandSegmentSizes` attribute that our variadic ops do not print.
// This split also encodes "at least one input / output", which dataflow.py checks for elementwise.
//
// `operandSegmentSizes` is listed for ops with optional operands so its value is checked (only the legal arrays).
// With one optional operand upstream IRDL derives the segments from the operand count; with two (`moe`) it reads
// them from this attribute, which xDSL prints under the same name.

irdl.dialect @dataflow {

  irdl.operation @weight {
    %layer = irdl.base "#builtin.string"
    %result = irdl.base "!builtin.tensor"
    irdl.operands()
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer}
  }

  irdl.operation @gemm {
    %lhs = irdl.base "!builtin.tensor"
    %rhs = irdl.base "!builtin.tensor"
    %bias = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // The accumulator: a float before quantization, an integer (i32) after.
    %acc_int = irdl.base "!builtin.integer"
    %f16 = irdl.is f16
    %bf16 = irdl.is bf16
    %f32 = irdl.is f32
    %f64 = irdl.is f64
    %acc_type = irdl.any_of(%acc_int, %f16, %bf16, %f32, %f64)
    %no_bias = irdl.is array<i32: 1, 1, 0>
    %with_bias = irdl.is array<i32: 1, 1, 1>
    %segments = irdl.any_of(%no_bias, %with_bias)
    irdl.operands(lhs: %lhs, rhs: %rhs, bias: optional %bias)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "acc_type" = %acc_type, "operandSegmentSizes" = %segments}
  }

  irdl.operation @requant {
    %input = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    %b4 = irdl.is 4 : i64
    %b8 = irdl.is 8 : i64
    %b16 = irdl.is 16 : i64
    %b32 = irdl.is 32 : i64
    %out_bits = irdl.any_of(%b4, %b8, %b16, %b32)
    irdl.operands(input: %input)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "out_bits" = %out_bits}
  }

  irdl.operation @attention {
    %q = irdl.base "!builtin.tensor"
    %k = irdl.base "!builtin.tensor"
    %v = irdl.base "!builtin.tensor"
    %mask = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    %num_heads = irdl.base "#builtin.integer"
    %head_dim = irdl.base "#builtin.integer"
    %scale = irdl.base "#builtin.float"
    %true = irdl.is true
    %false = irdl.is false
    %causal = irdl.any_of(%true, %false)
    // SOFTMAX_APPROX
    %sm_exact = irdl.is "exact"
    %sm_shiftmax = irdl.is "shiftmax"
    %sm_online = irdl.is "online"
    %sm_base2 = irdl.is "base2"
    %sm_ibert = irdl.is "ibert"
    %sm_log2q = irdl.is "log2q"
    %sm_free = irdl.is "softmax-free"
    %softmax = irdl.any_of(%sm_exact, %sm_shiftmax, %sm_online, %sm_base2, %sm_ibert, %sm_log2q, %sm_free)
    // ATTENTION_ALGORITHMS
    %al_standard = irdl.is "standard"
    %al_edge_moe = irdl.is "edge-moe"
    %al_flash = irdl.is "flash"
    %algorithm = irdl.any_of(%al_standard, %al_edge_moe, %al_flash)
    %no_mask = irdl.is array<i32: 1, 1, 1, 0>
    %with_mask = irdl.is array<i32: 1, 1, 1, 1>
    %segments = irdl.any_of(%no_mask, %with_mask)
    irdl.operands(q: %q, k: %k, v: %v, mask: optional %mask)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "num_heads" = %num_heads, "head_dim" = %head_dim, "scale" = %scale,
                     "causal" = %causal, "softmax" = %softmax, "algorithm" = %algorithm,
                     "operandSegmentSizes" = %segments}
  }

  irdl.operation @softmax {
    %input = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    %axis = irdl.base "#builtin.integer"
    // SOFTMAX_APPROX
    %sm_exact = irdl.is "exact"
    %sm_shiftmax = irdl.is "shiftmax"
    %sm_online = irdl.is "online"
    %sm_base2 = irdl.is "base2"
    %sm_ibert = irdl.is "ibert"
    %sm_log2q = irdl.is "log2q"
    %sm_free = irdl.is "softmax-free"
    %approx = irdl.any_of(%sm_exact, %sm_shiftmax, %sm_online, %sm_base2, %sm_ibert, %sm_log2q, %sm_free)
    irdl.operands(input: %input)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "axis" = %axis, "approx" = %approx}
  }

  irdl.operation @layernorm {
    %input = irdl.base "!builtin.tensor"
    %weight = irdl.base "!builtin.tensor"
    %bias = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    %epsilon = irdl.base "#builtin.float"
    %k_layernorm = irdl.is "layernorm"
    %k_rmsnorm = irdl.is "rmsnorm"
    %kind = irdl.any_of(%k_layernorm, %k_rmsnorm)
    // LAYERNORM_APPROX
    %ln_exact = irdl.is "exact"
    %ln_ilayernorm = irdl.is "ilayernorm"
    %approx = irdl.any_of(%ln_exact, %ln_ilayernorm)
    %no_bias = irdl.is array<i32: 1, 1, 0>
    %with_bias = irdl.is array<i32: 1, 1, 1>
    %segments = irdl.any_of(%no_bias, %with_bias)
    irdl.operands(input: %input, weight: %weight, bias: optional %bias)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "epsilon" = %epsilon, "kind" = %kind, "approx" = %approx,
                     "operandSegmentSizes" = %segments}
  }

  irdl.operation @rope {
    %input = irdl.base "!builtin.tensor"
    %cos = irdl.base "!builtin.tensor"
    %sin = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // ROPE_STYLES
    %r_rotate_half = irdl.is "rotate_half"
    %r_interleaved = irdl.is "interleaved"
    %style = irdl.any_of(%r_rotate_half, %r_interleaved)
    %head_dim = irdl.base "#builtin.integer"
    %rotary_dim = irdl.base "#builtin.integer"
    irdl.operands(input: %input, cos: %cos, sin: %sin)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "style" = %style, "head_dim" = %head_dim, "rotary_dim" = %rotary_dim}
  }

  irdl.operation @gelu {
    %input = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // GELU_APPROX
    %g_exact = irdl.is "exact"
    %g_tanh = irdl.is "tanh"
    %g_sigmoid = irdl.is "sigmoid"
    %g_shiftgelu = irdl.is "shiftgelu"
    %g_shiftgelu_row = irdl.is "shiftgelu-row"
    %g_ibert = irdl.is "ibert"
    %g_lut = irdl.is "lut"
    %approx = irdl.any_of(%g_exact, %g_tanh, %g_sigmoid, %g_shiftgelu, %g_shiftgelu_row, %g_ibert, %g_lut)
    irdl.operands(input: %input)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "approx" = %approx}
  }

  irdl.operation @elementwise {
    %inputs = irdl.base "!builtin.tensor"
    %inputs_rest = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // ELEMENTWISE_KINDS
    %e_add = irdl.is "add"
    %e_sub = irdl.is "sub"
    %e_mul = irdl.is "mul"
    %e_div = irdl.is "div"
    %e_pow = irdl.is "pow"
    %e_sqrt = irdl.is "sqrt"
    %e_reciprocal = irdl.is "reciprocal"
    %e_neg = irdl.is "neg"
    %e_abs = irdl.is "abs"
    %e_exp = irdl.is "exp"
    %e_log = irdl.is "log"
    %e_erf = irdl.is "erf"
    %e_tanh = irdl.is "tanh"
    %e_sigmoid = irdl.is "sigmoid"
    %e_relu = irdl.is "relu"
    %e_min = irdl.is "min"
    %e_max = irdl.is "max"
    %e_where = irdl.is "where"
    %e_equal = irdl.is "equal"
    %e_less = irdl.is "less"
    %e_greater = irdl.is "greater"
    %e_not = irdl.is "not"
    %e_and = irdl.is "and"
    %e_or = irdl.is "or"
    %e_cast = irdl.is "cast"
    %e_clip = irdl.is "clip"
    %e_softplus = irdl.is "softplus"
    %e_identity = irdl.is "identity"
    %e_mod = irdl.is "mod"
    %e_isnan = irdl.is "isnan"
    %e_isinf = irdl.is "isinf"
    %e_less_equal = irdl.is "less_equal"
    %e_greater_equal = irdl.is "greater_equal"
    %e_hardsigmoid = irdl.is "hardsigmoid"
    %e_hardswish = irdl.is "hardswish"
    %e_floor = irdl.is "floor"
    %e_ceil = irdl.is "ceil"
    %e_round = irdl.is "round"
    %e_sign = irdl.is "sign"
    %e_cos = irdl.is "cos"
    %e_sin = irdl.is "sin"
    %e_xor = irdl.is "xor"
    %e_elu = irdl.is "elu"
    %e_selu = irdl.is "selu"
    %e_celu = irdl.is "celu"
    %e_leaky_relu = irdl.is "leaky_relu"
    %e_prelu = irdl.is "prelu"
    %e_thresholded_relu = irdl.is "thresholded_relu"
    %e_shrink = irdl.is "shrink"
    %e_mish = irdl.is "mish"
    %e_swish = irdl.is "swish"
    %e_softsign = irdl.is "softsign"
    %e_tan = irdl.is "tan"
    %e_asin = irdl.is "asin"
    %e_acos = irdl.is "acos"
    %e_atan = irdl.is "atan"
    %e_sinh = irdl.is "sinh"
    %e_cosh = irdl.is "cosh"
    %e_asinh = irdl.is "asinh"
    %e_acosh = irdl.is "acosh"
    %e_atanh = irdl.is "atanh"
    %kind = irdl.any_of(%e_add, %e_sub, %e_mul, %e_div, %e_pow, %e_sqrt, %e_reciprocal, %e_neg, %e_abs, %e_exp,
                        %e_log, %e_erf, %e_tanh, %e_sigmoid, %e_relu, %e_min, %e_max, %e_where, %e_equal, %e_less,
                        %e_greater, %e_not, %e_and, %e_or, %e_cast, %e_clip, %e_softplus, %e_identity, %e_mod,
                        %e_isnan, %e_isinf, %e_less_equal, %e_greater_equal, %e_hardsigmoid, %e_hardswish,
                        %e_floor, %e_ceil, %e_round, %e_sign, %e_cos, %e_sin, %e_xor, %e_elu, %e_selu, %e_celu,
                        %e_leaky_relu, %e_prelu, %e_thresholded_relu, %e_shrink, %e_mish, %e_swish, %e_softsign,
                        %e_tan, %e_asin, %e_acos, %e_atan, %e_sinh, %e_cosh, %e_asinh, %e_acosh, %e_atanh)
    irdl.operands(inputs: %inputs, inputs_rest: variadic %inputs_rest)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "kind" = %kind}
  }

  irdl.operation @reduce {
    %input = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // REDUCE_KINDS
    %r_mean = irdl.is "mean"
    %r_sum = irdl.is "sum"
    %r_max = irdl.is "max"
    %r_min = irdl.is "min"
    %r_prod = irdl.is "prod"
    %r_argmax = irdl.is "argmax"
    %kind = irdl.any_of(%r_mean, %r_sum, %r_max, %r_min, %r_prod, %r_argmax)
    %axes = irdl.base "#builtin.array"
    %true = irdl.is true
    %false = irdl.is false
    %keepdims = irdl.any_of(%true, %false)
    irdl.operands(input: %input)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "kind" = %kind, "axes" = %axes, "keepdims" = %keepdims}
  }

  irdl.operation @move {
    %inputs = irdl.base "!builtin.tensor"
    %inputs_rest = irdl.base "!builtin.tensor"
    %outputs = irdl.base "!builtin.tensor"
    %outputs_rest = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    // MOVE_KINDS
    %m_reshape = irdl.is "reshape"
    %m_transpose = irdl.is "transpose"
    %m_gather = irdl.is "gather"
    %m_slice = irdl.is "slice"
    %m_concat = irdl.is "concat"
    %m_split = irdl.is "split"
    %m_expand = irdl.is "expand"
    %m_squeeze = irdl.is "squeeze"
    %m_unsqueeze = irdl.is "unsqueeze"
    %m_flatten = irdl.is "flatten"
    %m_patchify = irdl.is "patchify"
    %m_tile = irdl.is "tile"
    %m_trilu = irdl.is "trilu"
    %m_range = irdl.is "range"
    %m_shape = irdl.is "shape"
    %m_constant_of_shape = irdl.is "constant_of_shape"
    %m_cumsum = irdl.is "cumsum"
    %m_im2col = irdl.is "im2col"
    %m_pad = irdl.is "pad"
    %m_scatter = irdl.is "scatter"
    %m_resize = irdl.is "resize"
    %m_sort = irdl.is "sort"
    %kind = irdl.any_of(%m_reshape, %m_transpose, %m_gather, %m_slice, %m_concat, %m_split, %m_expand, %m_squeeze,
                        %m_unsqueeze, %m_flatten, %m_patchify, %m_tile, %m_trilu, %m_range, %m_shape,
                        %m_constant_of_shape, %m_cumsum, %m_im2col, %m_pad, %m_scatter, %m_resize, %m_sort)
    irdl.operands(inputs: %inputs, inputs_rest: variadic %inputs_rest)
    irdl.results(outputs: %outputs, outputs_rest: variadic %outputs_rest)
    irdl.attributes {"layer" = %layer, "kind" = %kind}
  }

  irdl.operation @embedding {
    %table = irdl.base "!builtin.tensor"
    %indices = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    irdl.operands(table: %table, indices: %indices)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer}
  }

  irdl.operation @moe {
    %input = irdl.base "!builtin.tensor"
    %gate = irdl.base "!builtin.tensor"
    %w1 = irdl.base "!builtin.tensor"
    %w2 = irdl.base "!builtin.tensor"
    %b1 = irdl.base "!builtin.tensor"
    %b2 = irdl.base "!builtin.tensor"
    %w3 = irdl.base "!builtin.tensor"
    %result = irdl.base "!builtin.tensor"
    %layer = irdl.base "#builtin.string"
    %num_experts = irdl.base "#builtin.integer"
    %top_k = irdl.base "#builtin.integer"
    // MOE_MODES
    %mo_token = irdl.is "token"
    %mo_task = irdl.is "task"
    %mo_image = irdl.is "image"
    %mode = irdl.any_of(%mo_token, %mo_task, %mo_image)
    %capacity_factor = irdl.base "#builtin.float"
    %true = irdl.is true
    %false = irdl.is false
    %renormalize = irdl.any_of(%true, %false)
    // MOE_ACTIVATIONS
    %a_gelu = irdl.is "gelu"
    %a_gelu_tanh = irdl.is "gelu_tanh"
    %a_relu = irdl.is "relu"
    %a_silu = irdl.is "silu"
    %a_identity = irdl.is "identity"
    %activation = irdl.any_of(%a_gelu, %a_gelu_tanh, %a_relu, %a_silu, %a_identity)
    // Three optional operands: upstream reads the segments from this attribute too (and checks they sum up).
    %no_bias = irdl.is array<i32: 1, 1, 1, 1, 0, 0, 0>
    %b1_only = irdl.is array<i32: 1, 1, 1, 1, 1, 0, 0>
    %b2_only = irdl.is array<i32: 1, 1, 1, 1, 0, 1, 0>
    %both = irdl.is array<i32: 1, 1, 1, 1, 1, 1, 0>
    %g_no_bias = irdl.is array<i32: 1, 1, 1, 1, 0, 0, 1>
    %g_b1_only = irdl.is array<i32: 1, 1, 1, 1, 1, 0, 1>
    %g_b2_only = irdl.is array<i32: 1, 1, 1, 1, 0, 1, 1>
    %g_both = irdl.is array<i32: 1, 1, 1, 1, 1, 1, 1>
    %segments = irdl.any_of(%no_bias, %b1_only, %b2_only, %both, %g_no_bias, %g_b1_only, %g_b2_only, %g_both)
    irdl.operands(input: %input, gate: %gate, w1: %w1, w2: %w2, b1: optional %b1, b2: optional %b2,
                  w3: optional %w3)
    irdl.results(result: %result)
    irdl.attributes {"layer" = %layer, "num_experts" = %num_experts, "top_k" = %top_k, "mode" = %mode,
                     "capacity_factor" = %capacity_factor, "renormalize" = %renormalize,
                     "activation" = %activation, "operandSegmentSizes" = %segments}
  }
}
