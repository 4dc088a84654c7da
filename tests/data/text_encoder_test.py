"""Title embeddings: a tiny randomly initialized BERT built here (CI needs
no 83 MB download), checked against the model run one text at a time."""

import os
from unittest import mock

from absl.testing import absltest
import numpy as np
import transformers

from research.fedrec.data import side_info
from research.fedrec.data import text_encoder

_WORDS = ['heat', 'toy', 'story', 'the', 'man', 'who', 'knew', 'too', 'much']


def _tiny_model(folder):
  vocab = os.path.join(folder, 'vocab.txt')
  with open(vocab, 'w') as f:
    f.write('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] +
                      _WORDS) + '\n')
  transformers.BertTokenizerFast(vocab).save_pretrained(folder)
  config = transformers.BertConfig(
      vocab_size=5 + len(_WORDS), hidden_size=8, num_hidden_layers=1,
      num_attention_heads=2, intermediate_size=16,
      max_position_embeddings=32)
  model = transformers.TFBertModel(config)
  model(model.dummy_inputs)
  model.save_pretrained(folder)
  return model, transformers.AutoTokenizer.from_pretrained(folder)


class TextEncoderTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.folder = absltest.get_default_test_tmpdir() + '/tiny_bert'
    os.makedirs(cls.folder, exist_ok=True)
    cls.model, cls.tokenizer = _tiny_model(cls.folder)

  def setUp(self):
    super().setUp()
    self.enter_context(mock.patch.dict(os.environ, {
        'FEDREC_TEXT_MODEL_DIR': self.folder,
        'FEDREC_CACHE_DIR': self.create_tempdir().full_path}))

  def _one_at_a_time(self, text):
    batch = self.tokenizer([text], return_tensors='np')
    states = self.model(dict(batch)).last_hidden_state.numpy()[0]
    mean = states.mean(axis=0)  # One text: no padding to mask.
    return mean / np.linalg.norm(mean)

  def test_batched_embeddings_are_the_masked_mean_of_each_text(self):
    texts = ['heat', 'the man who knew too much', '', 'toy story']
    values = text_encoder.embeddings(texts, progress=False)
    self.assertEqual(values.shape, (4, 8))
    for k, text in enumerate(texts):
      if text:
        np.testing.assert_allclose(values[k], self._one_at_a_time(text),
                                   atol=1e-5)
    np.testing.assert_array_equal(values[2], 0.0)  # An unknown title.

  def test_embeddings_are_cached_by_texts_and_model(self):
    first = text_encoder.embeddings(['toy story'], progress=False)
    with mock.patch.object(text_encoder, 'encode',
                           side_effect=AssertionError('not cached')):
      np.testing.assert_array_equal(
          text_encoder.embeddings(['toy story'], progress=False), first)
      with self.assertRaisesRegex(AssertionError, 'not cached'):
        text_encoder.embeddings(['heat'], progress=False)
    cached = os.listdir(os.path.join(text_encoder.cache_dir(), 'text'))
    self.assertLen(cached, 1)

  def test_item_features_embed_titles_without_their_year(self):
    info = side_info.ItemInfo(
        np.array([1, 2]), np.array(['Heat (1995)', 'Toy Story']),
        np.array([1995.0, np.nan]), ('Action',),
        np.array([[1], [0]], np.float32), 'test')
    values, labels = side_info.item_features(info, ('genres', 'title_text'))
    self.assertEqual(labels, ['genre:Action'] + [f'title:{k}'
                                                 for k in range(8)])
    np.testing.assert_allclose(values[0, 1:], self._one_at_a_time('heat'),
                               atol=1e-5)
    encoder = side_info.FeatureEncoder.fit(info, ('genres', 'title_text'))
    np.testing.assert_allclose(encoder.encode_one([], None, 'Toy Story'),
                               values[1], atol=1e-6)

  def test_missing_weights_say_how_to_install_them(self):
    with mock.patch.dict(os.environ, {'FEDREC_TEXT_MODEL_DIR': ''}), \
        mock.patch.object(text_encoder, '_WHEEL_PACKAGE', 'no_such_wheel'):
      with self.assertRaisesRegex(ValueError, r'^title_text needs the '
                                  r'all-MiniLM-L6-v2 weights: run `make '
                                  r'setup-text`'):
        text_encoder.model_dir()


if __name__ == '__main__':
  absltest.main()
