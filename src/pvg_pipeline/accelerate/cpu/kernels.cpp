// Python bindings of the fused CPU kernels (compiled after gin.cpp,
// attention.cpp, transformer.cpp, transformer_training.cpp,
// tokens.cpp, heads.cpp and loss.cpp, in one translation unit). The kernels release the GIL: the agents' updates run side by
// side in Python threads.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.def("lanes", &pvg_attention::lanes,
        "float lanes of one vector (the key padding multiple)");
  m.def("attention_forward", &pvg_attention::attention_forward,
        "fused masked attention, forward", no_gil);
  m.def("attention_backward", &pvg_attention::attention_backward,
        "fused masked attention, backward", no_gil);
  m.def("gin_forward", &pvg_gin::gin_forward, "fused GIN layer, forward", no_gil);
  m.def("gin_backward", &pvg_gin::gin_backward, "fused GIN layer, backward", no_gil);
  m.def("transformer_forward", &pvg_transformer::transformer_forward,
        "fused transformer layer, forward only", no_gil);
  m.def("attention_block_forward", &pvg_transformer::attention_block_forward,
        "fused attention block (qkv, attention, projection, residual, layer norm), "
        "forward", no_gil);
  m.def("attention_block_backward", &pvg_transformer::attention_block_backward,
        "fused attention block, backward", no_gil);
  m.def("feed_forward_forward", &pvg_transformer::feed_forward_forward,
        "fused feed-forward block (MLP, residual, layer norm), forward", no_gil);
  m.def("feed_forward_backward", &pvg_transformer::feed_forward_backward,
        "fused feed-forward block, backward", no_gil);
  m.def("tokens_forward", &pvg_tokens::tokens_forward,
        "transformer tokens from the GIN output (pooling, pair, projections), forward",
        no_gil);
  m.def("tokens_backward", &pvg_tokens::tokens_backward,
        "transformer tokens from the GIN output, backward", no_gil);
  m.def("heads_forward", &pvg_heads::heads_forward,
        "node, value and decision heads, forward", no_gil);
  m.def("heads_backward", &pvg_heads::heads_backward,
        "node, value and decision heads, backward", no_gil);
  m.def("ppo_loss", &pvg_loss::ppo_loss,
        "PPO loss of one minibatch and its gradients w.r.t. the heads' outputs",
        no_gil);
}
